"""A published version's ``index.html``: the ranking first, then the plots, then every cell.

``render_page(manifest, board, files)`` fills ``templates/leaderboard.html`` (Jinja2, autoescaped: method
and task names are text, never markup).  Per suite, the ranking (``initbench.board.ranking``: one row per
method, best IQM first) with links to each method's paper and code (``method_notes``, recorded in
the manifest at publish time); then the suite's plots, those ``initbench.board.plots`` drew (a plot
without data is not written, so not shown); then the long table of one row per (suite, protocol,
method, task, metric), and the runs that did not finish.  Both tables sort on a click on a column
header and filter as one types (inline vanilla JavaScript over the rendered rows: no CDN, no
fetch; the page reads offline).  The sort is kept in the address's fragment, ``#<table id>=<column
key>:<asc|desc>`` (e.g. ``index.html#ranking-1=iqm:asc``), so a sorted view can be linked to.
"""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from initbench.board.board import Board, ProtocolBlock, SuiteBoard
from initbench.board.leaderboard import REFERENCE_METHOD
from initbench.board.leaderboard_text import PROTOCOL_TITLES
from initbench.board.plots import PLOT_KINDS
from initbench.board.ranking import number, ranking

_URL = re.compile(r"https?://[^\s<>\"')\]]+")
_ARXIV = re.compile(r"arXiv:\s*(\d{4}\.\d{4,5})", re.IGNORECASE)


# --------------------------------------------------------------------------- method notes


def method_notes(names: list[str]) -> dict[str, dict[str, str]]:
    """Per method name: the summary, paper and code its registered ``InitMethod`` cites (an unregistered
    name, e.g. ``module:Class`` in untrusted rows, is never imported: it gets no entry)."""
    from initbench.method.registry import PluginError, get_method, method_names

    registered = set(method_names())
    notes = {}
    for name in sorted(set(names)):
        if name.split("+")[0] not in registered:
            continue
        try:
            method = get_method(name)
        except PluginError:
            continue
        notes[name] = {"summary": method.summary or "", "paper": method.paper or "", "code": method.code or ""}
    return notes


def first_url(text: str) -> str:
    """The first http(s) URL in ``text`` ("" if none), without trailing punctuation."""
    match = _URL.search(text or "")
    return match.group(0).rstrip(".,;:") if match else ""


def paper_url(citation: str) -> str:
    """A link for a paper citation: the URL it holds, else its arXiv abstract page, else ""."""
    match = _ARXIV.search(citation or "")
    return first_url(citation) or (f"https://arxiv.org/abs/{match.group(1)}" if match else "")


def _label(text: str, url: str) -> str:
    """A short label: the citation up to its arXiv id, URL, ``(`` or ``;`` (e.g. "Hu et al. 2022"), else
    the URL's repository (``owner/name`` on GitHub) or host."""
    head = re.split(r",\s*(?=arXiv|https?://)|\s\(|;", text or "", maxsplit=1)[0].strip()
    if head and not _URL.match(head) and head != "—":
        return head if len(head) <= 40 else head[:39] + "…"
    if url:
        parts = urlparse(url)
        path = [p for p in parts.path.split("/") if p]
        return "/".join(path[:2]) if parts.netloc == "github.com" and len(path) >= 2 else parts.netloc
    return ""


def _link_cell(text: str, url: str, *, code: bool = False) -> dict[str, Any]:
    label = _label(text, url) if not (code and url) else _label("", url)
    return _cell(label, label.lower() or None, href=url, title=text, cls="" if url else "muted")


# --------------------------------------------------------------------------- cells


def _cell(text: str = "", v: Any = None, **extra: Any) -> dict[str, Any]:
    """A table cell: its text, its sort value ``v`` (a number sorts as one; None sorts last) and extras
    (``sub``: a second, smaller line; ``title``; ``href``; ``cls``; ``bar``: a CI bar)."""
    if isinstance(v, float) and not math.isfinite(v):
        v = None
    cell = {
        "text": text,
        "v": "" if v is None else (repr(v) if isinstance(v, float) else v),
        "sub": "",
        "title": "",
        "href": "",
        "cls": "",
        "bar": None,
    }
    unknown = set(extra) - set(cell)
    if unknown:
        raise TypeError(f"unknown cell fields {sorted(unknown)}")
    return {**cell, **extra}


def _interval(low: float | None, high: float | None, spec: str = ".3f") -> str:
    """ "[low, high]", or "" without an interval (fewer than two seeds)."""
    return f"[{number(low, spec)}, {number(high, spec)}]" if number(low, spec) and number(high, spec) else ""


def _si(n: float | None) -> str:
    """1234567 -> '1.23M' (parameter counts)."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return ""
    for bound, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= bound:
            return f"{n / bound:.3g}{suffix}"
    return f"{n:.0f}"


def _ci_bar(low: float | None, mid: float | None, high: float | None, lo: float, hi: float) -> dict | None:
    """Where a CI and its point sit on the column's common scale [lo, hi], in percent."""
    if mid is None or hi <= lo or any(x is None or math.isnan(x) for x in (low, high)):
        return None
    at = lambda x: round(100 * (min(max(x, lo), hi) - lo) / (hi - lo), 2)  # noqa: E731
    return {"left": at(low), "width": max(at(high) - at(low), 0.6), "mark": at(mid)}


def _column(key: str, label: str, title: str = "", sub: str = "", numeric: bool = True) -> dict[str, Any]:
    return {"key": key, "label": label, "title": title, "sub": sub, "numeric": numeric}


def _ranking_table(entry: SuiteBoard, notes: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Columns and rows of a suite's ranking table (``initbench.board.ranking``) as page cells."""
    rows = ranking(entry)
    block = entry.protocols[entry.main]
    tasks = block.tasks
    has = {
        key: any(r[key] is not None for r in rows)
        for key in ("versus", "trainable_params", "init_seconds", "forgetting_kl")
    }
    has["learning_rates"] = any(r["learning_rates"] for r in rows)
    bounds = [x for r in rows for x in (r["iqm_low"], r["iqm_high"], r["iqm"]) if x is not None and not math.isnan(x)]
    lo, hi = (min(bounds + [0.0]), max(bounds + [1.0])) if bounds else (0.0, 1.0)
    tuned = entry.main == "tuned"
    columns = [
        _column("rank", "#", "rank by IQM (reference rows: ref)"),
        _column("method", "method", "the method's name (hover: its summary)", numeric=False),
        _column(
            "iqm",
            "IQM",
            "interquartile mean of normalized scores over seeds x tasks, with its 95% stratified-bootstrap CI",
            sub="95% CI",
        ),
    ]
    columns += [
        _column(
            f"task-{i}",
            task,
            f"{task}: {block.primary[task]}, mean over seeds with the 95% percentile-bootstrap CI",
            sub=block.primary[task],
        )
        for i, task in enumerate(tasks)
    ]
    if has["versus"]:
        columns.append(
            _column(
                "versus",
                f"vs {REFERENCE_METHOD}",
                f"P(method > {REFERENCE_METHOD}) over (seed, task) pairs; p: Wilcoxon signed-rank, "
                "Holm-adjusted; a coloured arrow marks a significant difference",
                sub="P(better), p",
            )
        )
    if has["learning_rates"]:
        columns.append(
            _column(
                "lr",
                "tuned lr" if tuned else "lr",
                "the learning rate tuning chose, per task" if tuned else "the suite's learning rate (fixed protocol)",
            )
        )
    if has["trainable_params"]:
        columns.append(_column("params", "params", "trainable parameters of a run"))
    if has["init_seconds"]:
        columns.append(
            _column(
                "init",
                "init s",
                "init cost: seconds to initialize (calibration included), median "
                "per run; below, the calibration examples it used",
            )
        )
    if has["forgetting_kl"]:
        columns.append(
            _column(
                "forgetting",
                "forgetting",
                "mean KL from the base model on held general text (nats, mean over tasks); lower moved less",
            )
        )
    columns += [_column("paper", "paper", numeric=False), _column("code", "code", numeric=False)]
    out = []
    for position, r in enumerate(rows):
        note = notes.get(r["method"], {})
        cells = [
            _cell(str(r["rank"]) if r["rank"] else ("ref" if r["is_reference"] else "–"), position),
            _cell(
                r["method"],
                r["method"].lower(),
                title=note.get("summary", ""),
                sub="reference" if r["is_reference"] else "",
                cls="name",
            ),
            _cell(
                number(r["iqm"]),
                r["iqm"],
                sub=_interval(r["iqm_low"], r["iqm_high"]),
                bar=_ci_bar(r["iqm_low"], r["iqm"], r["iqm_high"], lo, hi),
                title=f"{r['seeds']} seeds" if r["seeds"] else "no aggregate: a task or common seed missing",
            ),
        ]
        for task in tasks:
            s = r["scores"].get(task)
            cells.append(
                _cell()
                if s is None
                else _cell(
                    number(s["mean"]),
                    s["mean"],
                    sub=_interval(s["ci_low"], s["ci_high"]),
                    title=f"{s['metric']}, n = {s['seeds']} seeds",
                )
            )
        if has["versus"]:
            v = r["versus"]
            if v is None:
                cells.append(_cell("reference" if r["method"] == REFERENCE_METHOD else "", cls="muted"))
            else:
                better = v.mean_diff is not None and v.mean_diff > 0
                arrow = ("▲ " if better else "▼ ") if v.significant else ""
                cells.append(
                    _cell(
                        f"{v.poi:.2f}",
                        v.poi,
                        sub=f"{arrow}p {number(v.p_holm, '.2g')}",
                        cls=("better" if better else "worse") if v.significant else "",
                        title=f"P(better) 95% CI [{v.poi_low:.2f}, {v.poi_high:.2f}]; mean difference "
                        f"{number(v.mean_diff, '+.4f')} over {v.pairs} pairs",
                    )
                )
        if has["learning_rates"]:
            lrs = r["learning_rates"]
            every = sorted({x for v in lrs.values() for x in v})
            cells.append(
                _cell(
                    " · ".join(f"{x:g}" for x in every),
                    every[len(every) // 2] if every else None,
                    title="; ".join(f"{t}: {', '.join(f'{x:g}' for x in v)}" for t, v in lrs.items()),
                )
            )
        if has["trainable_params"]:
            p = r["trainable_params"]
            cells.append(_cell(_si(p), p, title=number(p, ",.0f")))
        if has["init_seconds"]:
            calib = r["calibration_examples"]
            cells.append(
                _cell(
                    number(r["init_seconds"], ".2f"), r["init_seconds"], sub=f"{calib:,.0f} calib. ex." if calib else ""
                )
            )
        if has["forgetting_kl"]:
            cells.append(_cell(number(r["forgetting_kl"], ".4f"), r["forgetting_kl"]))
        cells.append(_link_cell(note.get("paper", ""), paper_url(note.get("paper", ""))))
        cells.append(_link_cell(note.get("code", ""), first_url(note.get("code", "")), code=True))
        out.append({"cells": cells, "reference": r["is_reference"]})
    return {"columns": columns, "rows": out}


def _cells_table(board: Board) -> dict[str, Any]:
    """The long table: one row per (suite, protocol, method, task, metric)."""
    columns = [_column(k, k, numeric=False) for k in ("suite", "protocol", "method", "task", "metric")]
    columns += [
        _column("primary", "primary", "the task's primary metric (the one ranked)", numeric=False),
        _column("mean", "mean"),
        _column("std", "std"),
        _column("ci", "95% CI", "percentile bootstrap of the mean over seeds"),
        _column("seeds", "seeds"),
        _column("iqm", "IQM", "the method's aggregate on this protocol"),
    ]
    rows = []
    for entry in board.suites:
        for protocol, block in entry.protocols.items():
            iqm = {r.method: r.iqm for r in block.aggregate}
            for c in block.cells:
                primary = block.primary.get(c.task) == c.metric
                aggregate = iqm.get(c.method)
                rows.append(
                    {
                        "reference": c.is_reference,
                        "cells": [
                            _cell(entry.suite, entry.suite, title=f"spec {entry.suite_hash}"),
                            _cell(protocol, protocol),
                            _cell(c.method, c.method.lower()),
                            _cell(c.task, c.task),
                            _cell(c.metric, c.metric),
                            _cell("yes" if primary else "", "yes" if primary else None),
                            _cell(number(c.mean, ".4f"), c.mean),
                            _cell(number(c.std, ".4f"), c.std),
                            _cell(_interval(c.ci_low, c.ci_high, ".4f"), c.ci_low),
                            _cell(str(c.seeds), c.seeds),
                            _cell(number(aggregate, ".4f"), aggregate),
                        ],
                    }
                )
    return {"columns": columns, "rows": rows}


def _normalization(block: ProtocolBlock) -> str:
    norm = block.normalization
    if not norm:
        return "the raw primary metric (no base run, so not normalized)"
    text = "each task's score normalized as (score − base) / (ceiling − base), ceiling: " + (
        ", ".join(f"{t}: {m}" for t, m in norm.ceiling.items()) or "none"
    )
    skipped = norm.not_normalizable
    return text + (f"; not normalizable (no row better than base), left out: {', '.join(skipped)}" if skipped else "")


def render_page(manifest: dict[str, Any], board: Board, files: list[tuple[str, str]]) -> str:
    """The version's ``index.html`` (see the module docstring); ``files``: (name, what it holds) of each
    file of the version, for the page's data section (``initbench.board.publish`` knows its layout)."""
    import jinja2

    notes = manifest.get("methods") or {}
    plots = set(manifest.get("plots") or [])
    suites = []
    for i, entry in enumerate(board.suites, start=1):
        if entry.main is None:
            continue
        block = entry.protocols[entry.main]
        others = [p for p in entry.protocols if p != entry.main]
        suites.append(
            {
                "id": f"ranking-{i}",
                "name": entry.suite,
                "spec": entry.suite_hash,
                "protocol": PROTOCOL_TITLES[entry.main],
                "others": others,
                "normalization": _normalization(block),
                "table": _ranking_table(entry, notes),
                "plots": [
                    {"src": f"plots/{entry.suite}-{kind}.png", "title": title}
                    for kind, title in PLOT_KINDS.items()
                    if f"plots/{entry.suite}-{kind}.png" in plots
                ],
            }
        )
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(resources.files("initbench.board").joinpath("templates/leaderboard.html").read_text())
    return template.render(
        title=f"initbench leaderboard {manifest['version']}",
        manifest=manifest,
        commit=(manifest.get("git_commit") or "")[:12],
        suites=suites,
        cells=_cells_table(board),
        failures=board.failures,
        files=files,
        statistics=manifest.get("statistics") or {},
        version_dir=Path(manifest["version"]).name,
    )
