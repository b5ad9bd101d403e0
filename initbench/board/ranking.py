"""The ranking a leaderboard reader comes for: one row per method of a suite, best first.

``ranking(entry)`` gathers, from one suite of ``leaderboard.build``'s board (its main protocol: tuned
when present), what is computed there already and nothing new: the aggregate (IQM of normalized
scores with its stratified-bootstrap CI), each task's primary score (mean with its percentile-
bootstrap CI), the comparison with ``lora`` (probability of improvement, Holm-adjusted Wilcoxon
p), the learning rate the final runs trained at (the tuned rate under the tuned protocol), the
trainable parameters, the init cost and the forgetting.  Methods are ranked by IQM; a method
without an aggregate (it lacks a task or a common seed) follows, unranked; reference rows
(``base``, ``full-ft``) keep their place by IQM but get no rank.  ``render_ranking`` prints it as
text (a version's README); ``initbench.board.leaderboard_page`` as the page's first table.
"""

from __future__ import annotations

import math
from typing import Any

from tabulate import tabulate

from initbench.board.board import SuiteBoard
from initbench.board.leaderboard import REFERENCE_METHOD, forgetting_by_method, grid_edges


def ranking(entry: SuiteBoard) -> list[dict[str, Any]]:
    """One row per method of ``entry``'s main protocol, ranked by IQM (see the module docstring);
    ``versus`` is the method's ``board.Pairwise`` comparison with ``lora`` (None for ``lora``)."""
    main = entry.main
    if main is None:
        return []
    block = entry.protocols[main]
    aggregate = {r.method: r for r in block.aggregate}
    pairwise = {r.method: r for r in block.pairwise}
    cost = {r.method: r for r in entry.cost}
    forgetting = forgetting_by_method(entry.forgetting)
    reference = {c.method: c.is_reference for c in block.cells}
    edges = grid_edges(entry.tuning)[0] if main == "tuned" else set()
    scores: dict[str, dict[str, dict]] = {}
    for c in block.cells:
        if block.primary.get(c.task) == c.metric:
            scores.setdefault(c.method, {})[c.task] = {
                "metric": c.metric,
                "mean": c.mean,
                "ci_low": c.ci_low,
                "ci_high": c.ci_high,
                "seeds": c.seeds,
            }
    ranked = [r.method for r in block.aggregate]  # sorted by IQM, best first
    methods = ranked + sorted(set(reference) - set(ranked))
    rows, rank = [], 0
    for method in methods:
        agg, spent = aggregate.get(method), cost.get(method)
        if agg is not None and not reference[method]:
            rank += 1
        rows.append(
            {
                "rank": rank if agg is not None and not reference[method] else None,
                "method": method,
                "is_reference": reference[method],
                "protocol": main,
                "iqm": agg.iqm if agg else None,
                "iqm_low": agg.iqm_low if agg else None,
                "iqm_high": agg.iqm_high if agg else None,
                "seeds": agg.seeds if agg else None,
                "scores": scores.get(method, {}),
                "versus": pairwise.get(method),
                "learning_rates": entry.learning_rates.get(method, {}),
                "rate_on_grid_edge": sorted(task for m, task in edges if m == method),
                "trainable_params": spent.trainable_params if spent else None,
                "init_seconds": spent.init_seconds if spent else None,
                "calibration_examples": spent.calibration_examples if spent else None,
                "forgetting_kl": forgetting.get(method),
            }
        )
    return rows


def number(x: float | None, spec: str = ".3f") -> str:
    """``x`` formatted, "" for a missing value, and no sign on a value that rounds to zero (-0.000)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    text = format(x, spec)
    return text[1:] if text.startswith("-") and not any(ch in "123456789" for ch in text) else text


def render_ranking(entry: SuiteBoard, fmt: str = "github") -> str:
    """``ranking(entry)`` as a table (tabulate ``fmt``) with a line saying what its columns are."""
    rows = ranking(entry)
    if not rows:
        return ""
    tasks = entry.protocols[entry.main].tasks
    forgetting = any(r["forgetting_kl"] is not None for r in rows)
    lines = []
    for r in rows:
        versus = r["versus"]
        line = [
            r["rank"] or ("ref" if r["is_reference"] else ""),
            r["method"],
            f"{number(r['iqm'], '.3f')} [{number(r['iqm_low'], '.3f')}, {number(r['iqm_high'], '.3f')}]"
            if r["iqm"] is not None
            else "",
        ]
        for task in tasks:
            s = r["scores"].get(task)
            line.append(
                ""
                if s is None
                else number(s["mean"], ".3f")
                + (
                    f" [{number(s['ci_low'], '.3f')}, {number(s['ci_high'], '.3f')}]"
                    if number(s["ci_low"], "g")
                    else ""
                )
            )
        line.append(
            ""
            if versus is None
            else f"{versus.poi:.2f}, p {number(versus.p_holm, '.2g')}" + (" *" if versus.significant else "")
        )
        rates = ", ".join(f"{lr:g}" for lr in sorted({x for v in r["learning_rates"].values() for x in v}))
        line.append(rates + (" (edge)" if r["rate_on_grid_edge"] else ""))
        line += [number(r["trainable_params"], ",.0f"), number(r["init_seconds"], ".2f")]
        if forgetting:
            line.append(number(r["forgetting_kl"], ".4f"))
        lines.append(line)
    headers = (
        ["rank", "method", "IQM [95% CI]"]
        + [f"{t} [95% CI]" for t in tasks]
        + [f"vs {REFERENCE_METHOD}: P(better), p (Holm)", "learning rate", "trainable params", "init s"]
        + (["forgetting (KL)"] if forgetting else [])
    )
    rate = "tuned rate (per task)" if entry.main == "tuned" else "the suite's rate"
    return (
        f"Ranking ({entry.main} protocol): IQM of normalized scores across tasks; per task the primary "
        f"metric's mean over seeds; learning rate: the {rate} (edge: chosen at the lowest or highest rate tried, "
        f"so the best may lie outside the grid); * = significantly different from "
        f"{REFERENCE_METHOD} (Holm-adjusted Wilcoxon, see below).\n\n"
        + tabulate(lines, headers, tablefmt=fmt, disable_numparse=True)
    )
