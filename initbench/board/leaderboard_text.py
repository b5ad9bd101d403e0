"""The leaderboard as text: a typed board (``initbench.board.leaderboard.build``) as tables in any tabulate
format (``github`` Markdown by default), one section per suite.

``render_board(board)`` prints, per suite and protocol, the per-task cells, the aggregate across tasks
and the comparison with ``lora``; then, for the main protocol, tuning trials, convergence, cost,
diagnostics, forgetting and curvature at init; and the runs that did not finish.  ``render(path)``
does it for the results under a folder, with the grid-edge report of its selection files.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

from initbench.board import markdown_table, stats
from initbench.board.board import (
    Board,
    Cell,
    ConvergenceRow,
    CostRow,
    CurvatureCell,
    DiagnosticsRow,
    ForgettingRow,
    Pairwise,
    ProtocolBlock,
    ResolutionRow,
    TuningRow,
    TuningSeedCheck,
)
from initbench.board.leaderboard import (
    ALPHA,
    BOOTSTRAP_REPS,
    CONVERGENCE_FRACTION,
    IQM_REPS,
    REFERENCE_METHOD,
    build,
    grid_edges,
)
from initbench.selection.counted import read_results
from initbench.selection.lr_prior import PriorFit
from initbench.store.results import CURVE_SUFFIX

PROTOCOL_TITLES = {
    "tuned": "Tuned protocol: learning rate chosen per method and task on validation, scored on test",
    "fixed": "At the suite's default learning rate (fixed protocol)",
}


def _table(lines: list[list], headers: list[str], tablefmt: str) -> str:
    """A table whose numbers are already text formatted here ("0.4270", "+0.0280", "1.20e-03"):
    tabulate is told not to parse them back into numbers, which would reprint them in its own
    format and drop trailing zeros and signs ("0.427", "0.028")."""
    return markdown_table.table(lines, headers, tablefmt=tablefmt, disable_numparse=True)


def render(path: Path, fmt: str = "github") -> str:
    """The leaderboard of every results file under ``path`` as text (tabulate format ``fmt``), with the
    curvature measured there and, when it holds selection files, how often they chose a grid's edge."""
    from initbench.run.curvature_table import read_table
    from initbench.selection.tuning_grid import edge_report

    table = read_results(path)
    if table.num_rows == 0:
        return f"no results under {path}"
    text = render_board(build(table, read_results(path, CURVE_SUFFIX), read_table(path)), fmt)
    edges = edge_report(path) if Path(path).is_dir() else []
    return text + ("\n\n" + render_edges(edges, fmt) if edges else "")


def render_board(board: Board, fmt: str = "github", level: int = 2) -> str:
    """Every table of ``board`` (tabulate format ``fmt``), suites as headings of ``level``."""
    h = "#" * level
    sections = []
    for entry in board.suites:
        parts = [f"{h} Suite `{entry.suite}` (spec {entry.suite_hash})"]
        for protocol, block in entry.protocols.items():
            parts.append(f"{h}# {PROTOCOL_TITLES[protocol]}\n\n" + _suite_table(block.cells, block.primary, fmt))
            parts.append(_aggregate_table(block, fmt))
            if block.pairwise:
                parts.append(_pairwise_table(block.pairwise, fmt))
        if entry.resolution:
            parts.append(_resolution_table(entry.resolution, entry.main, fmt))
        if entry.tuning:
            parts.append(_tuning_table(entry.tuning, fmt))
        if entry.tuning_seed:
            parts.append(_tuning_seed_table(entry.tuning_seed, fmt))
        if entry.convergence:
            parts.append(_convergence_table(entry.convergence, fmt))
        if entry.cost:
            parts.append(_cost_table(entry.cost, fmt))
        if entry.diagnostics:
            parts.append(_diagnostics_table(entry.diagnostics, fmt))
        if entry.forgetting:
            parts.append(_forgetting_table(entry.forgetting, fmt))
        if entry.curvature:
            parts.append(_curvature_tables(entry.curvature, entry.curvature_fits, fmt))
        sections.append("\n\n".join(parts))
    if board.failures:
        lines = [[r.suite, r.method, r.task, r.seed, r.status, r.error or ""] for r in board.failures]
        sections.append(
            f"{h} Runs not ok\n\n"
            + _table(lines, ["suite", "method", "task", "seed", "status", "reason"], tablefmt=fmt)
        )
    return "\n\n".join(sections)


def _suite_table(rows: list[Cell], primary: dict[str, str], fmt: str) -> str:
    """Per method, a cell per (task, metric) and the mean over tasks of each task's primary metric
    (blank unless the method has every task's primary metric)."""
    keys = [(r.task, r.metric) for r in rows]
    columns = sorted(set(keys))
    where = {key: i for i, key in enumerate(columns)}
    methods = sorted({(not r.is_reference, r.method) for r in rows})  # reference rows first
    by_method: dict[str, list[Cell | None]] = {method: [None] * len(columns) for _, method in methods}
    for r, i in zip(rows, map(where.__getitem__, keys)):
        by_method[r.method][i] = r
    primary_columns = [i for i, (task, metric) in enumerate(columns) if primary.get(task) == metric]
    lines = []
    for not_reference, method in methods:
        cells = by_method[method]
        task_means = [cells[i].mean for i in primary_columns if cells[i] is not None]
        lines.append(
            [method + ("" if not_reference else " (reference)")]
            + [_fmt(r) if r is not None else "" for r in cells]
            + [f"{sum(task_means) / len(task_means):.4f}" if len(task_means) == len(primary) else ""]
        )
    per_task = Counter(task for task, _ in columns)
    headers = (
        ["method"]
        + [
            f"{task} ({metric}{', primary' if per_task[task] > 1 and primary.get(task) == metric else ''})"
            for task, metric in columns
        ]
        + ["mean over tasks (primary metrics)"]
    )
    note = f"\n\nCells: mean ± std [95% percentile-bootstrap CI of the mean, {BOOTSTRAP_REPS:,} resamples] (n = seeds)."
    return _table(lines, headers, tablefmt=fmt) + note


def _num(x, spec=".4f") -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _fmt(r: Cell) -> str:
    """``mean ± std [ci_low, ci_high] (n=seeds)``, without the std or the interval where it is missing
    (None or NaN); ``no value (n=seeds)`` where the mean is missing.  ``%``-formatting (the text of ``format(x, ".4f")``): one call per cell, faster
    than an f-string of four floats over a board's 100,000s of cells."""
    std, low = r.std, r.ci_low
    if r.mean is None:  # every seed's value missing (None): a blank cell would read as no run
        return "no value (n=%s)" % r.seeds  # noqa: UP031
    if std is not None and std == std:  # std == std: not NaN
        if low is not None and low == low:
            return "%.4f ± %.4f [%.4f, %.4f] (n=%s)" % (r.mean, std, low, r.ci_high, r.seeds)  # noqa: UP031
        return "%.4f ± %.4f (n=%s)" % (r.mean, std, r.seeds)  # noqa: UP031
    if low is not None and low == low:
        return "%.4f [%.4f, %.4f] (n=%s)" % (r.mean, low, r.ci_high, r.seeds)  # noqa: UP031
    return "%.4f (n=%s)" % (r.mean, r.seeds)  # noqa: UP031


def _aggregate_table(block: ProtocolBlock, fmt: str) -> str:
    norm = block.normalization
    lines = [
        [
            r.method + (" (reference)" if r.is_reference else ""),
            f"{r.iqm:.4f}",
            f"[{r.iqm_low:.4f}, {r.iqm_high:.4f}]",
            f"{r.mean:.4f}",
            r.seeds,
            r.tasks,
        ]
        for r in block.aggregate
    ]
    what = (
        "normalized score, per task (score - base) / (ceiling - base), ceiling = "
        + (", ".join(f"{t}: {c}" for t, c in norm.ceiling.items()) or "none")
        + "".join(f"; {t}: not normalizable (no row better than base), left out" for t in norm.not_normalizable)
        if norm
        else "raw primary metric (no `base` run, so not normalized)"
    )
    primary = ", ".join(f"{t}: {m}" for t, m in block.primary.items())
    return f"Across tasks ({what}; primary metrics {primary}):\n\n" + _table(
        lines, ["method", "IQM", f"95% CI (stratified bootstrap, {IQM_REPS:,})", "mean", "seeds", "tasks"], tablefmt=fmt
    )


def _pairwise_table(rows: list[Pairwise], fmt: str) -> str:
    lines = [
        [
            r.method,
            f"{r.poi:.3f} [{r.poi_low:.3f}, {r.poi_high:.3f}]",
            _num(r.mean_diff, "+.4f"),
            r.pairs,
            _num(r.p_wilcoxon, ".3g"),
            _num(r.p_holm, ".3g") + (" *" if r.significant else ""),
        ]
        for r in rows
    ]
    text = (
        f"Versus `{REFERENCE_METHOD}` (P(X > lora) with 95% stratified-bootstrap CI; Wilcoxon signed-rank paired by "
        f"(seed, task), Holm-adjusted; * = significant at {ALPHA}):\n\n"
        + _table(lines, ["method", "P(X > lora)", "mean diff", "pairs", "p", "p (Holm)"], tablefmt=fmt)
    )
    p_values, floors = [r.p_wilcoxon for r in rows], [r.min_p for r in rows]
    if rows and not stats.holm_can_reject(p_values, floors, ALPHA):
        compared = sum(not math.isnan(p) for p in p_values)
        text += (
            f"\n\nNo row of this table can be significant, whatever the scores: with {max(r.pairs for r in rows)} "
            f"pairs or fewer the exact test's p is at least {min(floors):.3g}, and Holm over {compared} comparisons "
            f"needs p <= {ALPHA / max(compared, 1):.3g}. Compare methods by P(X > lora) and its interval, and by "
            "the IQM intervals above."
        )
    return text


def _resolution_table(rows: list[ResolutionRow], protocol: str | None, fmt: str) -> str:
    """Per task: the seed noise of the primary metric and the smallest difference the seeds detect."""
    lines = [
        [
            r.task,
            r.metric,
            r.methods,
            f"{r.pooled_sd:.4f}",
            _num(r.reference_sd, ".4f"),
            r.seeds,
            f"{r.minimum_detectable_difference:.4f}",
        ]
        for r in rows
    ]
    return (
        f"Resolution ({protocol} protocol, primary metric): the seed s.d. pooled over the trained methods (square root "
        f"of their mean variance) beside {REFERENCE_METHOD}'s own, and the smallest true difference between two "
        "methods their seeds detect (two-sided, alpha 0.05, power 0.8, normal approximation); a gap below it is not "
        "told apart from seed noise on that task:\n\n"
        + _table(
            lines,
            ["task", "metric", "methods", "pooled s.d.", f"{REFERENCE_METHOD} s.d.", "seeds", "detectable difference"],
            tablefmt=fmt,
        )
    )


def _tuning_seed_table(check: TuningSeedCheck, fmt: str) -> str:
    """The tuning-seed check (``initbench.board.tuning_seed``), with how to read it."""
    seeds = ", ".join(map(str, check.tuning_seeds))
    lines = [
        [
            r.comparison,
            r.pairs,
            f"{r.mean:.4f}",
            f"[{_num(r.ci_low, '.4f')}, {_num(r.ci_high, '.4f')}]",
            f"{r.share_positive:.2f}",
        ]
        for r in check.rows
    ]
    share = f"{len(check.tuning_seeds)}/{check.final_seeds}" if check.final_seeds else "the tuning seeds' share"
    return (
        f"Tuning-seed check: the finals of the tuning seed(s) ({seeds}) minus the mean of the other seeds' finals, "
        "primary metric, averaged over (method, task) with a 95% bootstrap interval over the pairs.  Under the "
        "tuned protocol the rate was chosen on the tuning seeds' own trainings (their finals are those trainings "
        "scored on test), so a tuned gap above the fixed one is selection bias: it raises a tuned mean by about "
        f"{share} of the paired difference.\n\n"
        + _table(lines, ["protocol", "(method, task)", "gap", "95% CI", "share > 0"], tablefmt=fmt)
    )


def _tuning_table(rows: list[TuningRow], fmt: str) -> str:
    lrs = sorted({r.lr for r in rows})
    cells: dict[tuple[str, str], dict[float, TuningRow]] = defaultdict(dict)
    for r in rows:
        cells[(r.method, r.task)][r.lr] = r
    edges, choices = grid_edges(rows)
    lines = []
    for (method, task), by_lr in sorted(cells.items()):
        chosen = next((lr for lr, r in by_lr.items() if r.selected), None)
        lines.append(
            [method, task, next(iter(by_lr.values())).metric]
            + [_num(chosen, "g") + (" (edge)" if (method, task) in edges else "")]
            + [
                (f"**{by_lr[lr].validation_mean:.4f}**" if by_lr[lr].selected else f"{by_lr[lr].validation_mean:.4f}")
                if lr in by_lr
                else ""
                for lr in lrs
            ]
        )
    text = "Tuning trials (validation mean of the primary metric over tuning seeds; chosen rate in bold):\n\n" + _table(
        lines, ["method", "task", "metric", "selected lr"] + [f"lr {lr:g}" for lr in lrs], tablefmt=fmt
    )
    if edges:
        text += (
            f"\n\n(edge): {len(edges)} of {choices} "
            "choices are the lowest or highest rate tried; the best rate may lie outside the grid, so that "
            "method may be under-tuned."
        )
    return text


def _convergence_table(rows: list[ConvergenceRow], fmt: str) -> str:
    lines = [
        [
            r.method,
            r.task,
            f"{r.auc:.4f}",
            f"[{_num(r.auc_low, '.4f')}, {_num(r.auc_high, '.4f')}]",
            (_num(r.steps_to_target, ".1f") or "never") + f" ({r.reached}/{r.runs})",
            _num(r.target_loss),
        ]
        for r in rows
    ]
    return (
        f"Convergence (training loss: area under the curve = time-averaged loss, mean over seeds with a 95% "
        f"bootstrap interval; steps until the EMA(0.1) loss reaches {CONVERGENCE_FRACTION}x {REFERENCE_METHOD}'s "
        "mean final EMA loss, mean over the runs that reached it):\n\n"
        + _table(
            lines,
            ["method", "task", "loss AUC", "95% CI", f"steps to {CONVERGENCE_FRACTION}x lora final", "target"],
            tablefmt=fmt,
        )
    )


def _diagnostics_table(rows: list[DiagnosticsRow], fmt: str) -> str:
    lines = [
        [
            r.method,
            r.runs,
            _num(r.trainable_params, ",.0f"),
            "yes" if r.base_weights_modified else "no",
            _num(r.init_update_erank, ".2f"),
            _num(r.final_update_erank, ".2f"),
            _num(r.relative_weight_change, ".2e"),
        ]
        for r in rows
    ]
    return (
        "Rich or lazy (runs with INITBENCH_DIAGNOSTICS=1; initbench.run.diagnostics): entropy effective rank of the "
        "update scale*B[M]A after init and after training, mean over adapted layers (at most the LoRA rank); "
        "relative change ||W_final - W0||_F / ||W0||_F of the adapted weights, mean over layers:\n\n"
        + _table(
            lines,
            ["method", "runs", "trainable params", "base offset", "erank at init", "erank final", "rel. weight change"],
            tablefmt=fmt,
        )
    )


def _forgetting_table(rows: list[ForgettingRow], fmt: str) -> str:
    lines = [
        [r.method, r.task, r.seeds, _num(r.mean, ".4f"), f"[{_num(r.ci_low, '.4f')}, {_num(r.ci_high, '.4f')}]"]
        for r in rows
    ]
    sets = sorted({r.held_set for r in rows})
    return (
        "Forgetting (initbench.run.forgetting): mean per-token KL(p_base || p_trained) in nats on held general text "
        f"({'; '.join(sets)}), mean over seeds with a 95% bootstrap interval; lower moved less:\n\n"
        + _table(lines, ["method", "task", "seeds", "KL from base", "95% CI"], tablefmt=fmt)
    )


def _curvature_tables(cells: list[CurvatureCell], fits: dict[str, PriorFit | None], fmt: str) -> str:
    """Per task: method | lambda_max (converged?) | predicted rate | chosen rate | on the grid's edge,
    and the fit of the chosen rate on 1 / lambda_max (``initbench.board.curvature_board``)."""
    parts = []
    for task, fitted in fits.items():
        rows = [c for c in cells if c.task == task]
        lines = [
            [
                c.method,
                f"{c.lambda_max:.4g} ("
                + ("yes" if c.converged == c.seeds else f"no: {c.converged}/{c.seeds} seeds")
                + ")",
                _num(c.predicted_lr, ".3g"),
                _num(c.chosen_lr, ".3g"),
                c.edge + (f" ({len(c.grid)} rates {c.grid[0]:.3g}-{c.grid[-1]:.3g})" if c.grid else ""),
            ]
            for c in rows
        ]
        sources = sorted({c.reference_lr_source for c in rows})
        line = "fit of log(chosen rate) on log(1 / lambda_max): " + (
            f"slope {fitted.slope:.3f}, R^2 {fitted.r_squared:.3f}, r {fitted.pearson_r:.3f} "
            + (
                f"[95% CI {fitted.r_ci[0]:.3f}, {fitted.r_ci[1]:.3f}]"
                if _num(fitted.r_ci[0])
                else "(no Fisher-z interval with n <= 3)"
            )
            + f", n = {fitted.n}"
            if fitted
            else "fewer than three methods with a chosen rate, no fit"
        )
        parts.append(
            f"Curvature at init, task `{task}` (lambda_max: top Hessian eigenvalue of the training loss "
            f"after init, mean over seeds, initbench.run.curvature; predicted: lr-prior, calibrated on "
            f"{rows[0].reference}'s {' / '.join(sources)} rate; edge: the chosen rate is the lowest or "
            f"highest rate tried):\n\n"
            + _table(
                lines,
                [
                    "method",
                    "lambda_max (converged?)",
                    "predicted rate (lr-prior)",
                    "tuned (chosen) rate",
                    "on the grid's edge",
                ],
                tablefmt=fmt,
            )
            + f"\n\n{line}"
        )
    return "\n\n".join(parts)


def render_edges(rows: list[dict], fmt: str = "github") -> str:
    """How often the chosen rate was the lowest or highest of its grid, per suite and grid kind
    (``initbench.selection.tuning_grid.edge_report``)."""
    lines = [
        [
            r["suite"],
            r["kind"],
            r["selections"],
            r["lowest"],
            r["highest"],
            f"{r['lowest'] + r['highest']}/{r['selections']}"
            + (f" ({(r['lowest'] + r['highest']) / r['selections']:.0%})" if r["selections"] else ""),
            r["not_from_grid"],
        ]
        for r in rows
    ]
    return (
        "Chosen learning rate on the edge of its tuning grid, per grid kind (selection files; on the edge, the "
        "best rate may lie outside the grid):\n\n"
        + _table(
            lines,
            [
                "suite",
                "grid",
                "selections",
                "lowest rate",
                "highest rate",
                "on the edge",
                "not from the grid (every trial failed)",
            ],
            tablefmt=fmt,
        )
    )


def _cost_table(rows: list[CostRow], fmt: str) -> str:
    lines = [
        [
            r.method,
            _num(r.trainable_params, ",.0f"),
            _num(r.init_seconds, ".3f"),
            _num(r.train_seconds, ".2f"),
            _num(r.train_tokens_per_second, ",.0f"),
            _num(r.mfu, ".1%"),
            _num((r.peak_memory_bytes or 0) / 2**20, ",.0f"),
            _num(r.train_tokens, ",.0f"),
            _num(r.calibration_examples, ",.0f"),
            _num(r.flops, ".3g"),
            r.tuning_trials,
            _num(r.tuning_seconds, ".1f"),
            _num(r.tuning_flops, ".3g"),
            _num(r.total_flops, ".3g"),
        ]
        for r in rows
    ]
    return (
        "Cost per final run (seconds, tok/s and MFU: median over the final runs, so one run slowed by a busy or "
        "paused machine does not move them; parameters, tokens, examples, FLOPs: mean; peak memory: max; tuning: "
        "sum over the method's trials; total FLOPs: finals + tuning; MFU: initbench.run.throughput, GPU only):\n\n"
        + _table(
            lines,
            [
                "method",
                "trainable params",
                "init s",
                "train s",
                "train tok/s",
                "MFU",
                "peak MiB",
                "train tokens",
                "calib examples",
                "FLOPs/run",
                "trials",
                "tuning s",
                "tuning FLOPs",
                "total FLOPs",
            ],
            tablefmt=fmt,
        )
    )
