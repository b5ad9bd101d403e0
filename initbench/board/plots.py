"""Leaderboard plots (matplotlib, Agg backend): one set of PNGs per suite of a board.

``write_plots(board, curves, folder)`` writes, per suite ``S`` (main protocol: tuned if present),
only the plots that have data to show (``PLOT_KINDS``: the kinds, in the page's order):

* ``S-aggregate.png``: the IQM of normalized scores with its stratified-bootstrap CI;
* ``S-scores.png``: each task's primary metric, mean per method with its 95% bootstrap CI;
* ``S-pareto-params.png`` / ``S-pareto-init.png``: IQM vs trainable parameters / init seconds,
  with the Pareto front of the methods (no other method is both cheaper and better; reference rows
  drawn for scale, not on it), where at least two methods recorded the cost and differ in it;
* ``S-pareto-forgetting.png`` (when runs recorded it): IQM vs forgetting, the mean over tasks of
  each method's KL from the base model (``initbench.run.forgetting``), with the front (no other
  method both forgets less and scores better);
* ``S-lr-sensitivity.png`` (when the rates were tuned): validation score vs learning rate per
  method (the tuning trials);
* ``S-loss-curves.png`` (when training-loss curves were recorded): mean training loss per step,
  per method and task;
* ``S-curvature-lr.png`` (when curvature at init was measured and rates were tuned): the chosen
  rate against 1 / lambda_max, log-log, a point per method and a panel per task, with the fitted
  line and its R^2 (``initbench.board.curvature_board``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from initbench.board.board import Board, CurvatureCell, ProtocolBlock, SuiteBoard


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(plt, n: int, width: float = 4.5, height: float = 3.2):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _log_axes(ax, *axes: str) -> None:
    """Log scale on ``axes`` ("x", "y") with ticks labelled as plain numbers (0.001, not 10^-3): with
    ``text.parse_math`` off (see :func:`write_plots`) matplotlib's default labels print as raw mathtext.
    Which ticks carry a label is matplotlib's choice (minor ones only over a narrow range)."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    for name in axes:
        getattr(ax, f"set_{name}scale")("log")
        axis = getattr(ax, f"{name}axis")
        axis.set_major_formatter(Plain())
        axis.set_minor_formatter(Plain(labelOnlyBase=False))


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_plots(board: Board, curves: pa.Table | None, folder: Path) -> list[Path]:
    """Every plot of every suite of ``board`` under ``folder``.  Names are drawn as plain text
    (no mathtext: a method called ``a$b`` is a name, not an unbalanced formula)."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        return _write_plots(_pyplot(), board, curves, folder)


#: every kind of plot (``S-<kind>.png``), in the order a page shows them, with its title
PLOT_KINDS = {
    "aggregate": "Aggregate over tasks (IQM, 95% CI)",
    "scores": "Score per task (mean, 95% CI)",
    "pareto-params": "Score vs trainable parameters",
    "pareto-init": "Score vs init cost",
    "pareto-forgetting": "Score vs forgetting",
    "lr-sensitivity": "Learning-rate sensitivity (tuning trials)",
    "loss-curves": "Training-loss curves",
    "curvature-lr": "Tuned rate vs curvature at init",
}


def _write_plots(plt, board: Board, curves: pa.Table | None, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for entry in board.suites:
        if entry.main is None:
            continue
        drawers = _drawers(plt, entry, curves)
        for kind in PLOT_KINDS:
            fig = drawers[kind]()
            if fig is not None:  # nothing to show: no file, rather than empty axes
                written.append(_save(fig, folder / f"{entry.suite}-{kind}.png"))
    return written


def _drawers(plt, entry: SuiteBoard, curves: pa.Table | None) -> dict[str, Callable[[], Any]]:
    """Per plot kind, what draws it for one suite of the board (a figure, or None: no data)."""
    from initbench.board.leaderboard import forgetting_by_method

    main = entry.main
    block = entry.protocols[main]
    params = {r.method: r.trainable_params for r in entry.cost}
    init = {r.method: r.init_seconds for r in entry.cost}
    forgetting = forgetting_by_method(entry.forgetting)
    return {
        "aggregate": lambda: _aggregate(plt, block, main),
        "scores": lambda: _scores(plt, block, main),
        "pareto-params": lambda: _pareto(plt, block, params, "trainable parameters"),
        "pareto-init": lambda: _pareto(plt, block, init, "init seconds (incl. calibration)"),
        "pareto-forgetting": lambda: _pareto(plt, block, forgetting, "forgetting (mean KL from the base model, nats)"),
        "lr-sensitivity": lambda: _lr_sensitivity(plt, entry),
        "loss-curves": lambda: _loss_curves(plt, entry, curves),
        "curvature-lr": lambda: _curvature_lr(plt, entry),
    }


def _curvature_points(cells: list[CurvatureCell], task: str | None) -> list[tuple[float, float, str]]:
    """(1 / lambda_max, chosen rate, method) of the cells (of ``task``) with a positive lambda_max and a choice."""
    return [
        (1.0 / c.lambda_max, c.chosen_lr, c.method)
        for c in cells
        if (task is None or c.task == task) and c.chosen_lr and c.lambda_max > 0
    ]


def _curvature_lr(plt, entry):
    """Chosen rate against 1 / lambda_max on log-log axes, a point per method and a panel per task,
    with the fitted line of ``lr_prior.fit`` (``entry.curvature_fits``) and its R^2; None without
    a measured method with a chosen rate."""
    tasks = [t for t in entry.curvature_fits if _curvature_points(entry.curvature, t)]
    if not tasks:
        return None
    fig, axes = _grid(plt, len(tasks))
    for ax, task in zip(axes, tasks):
        points = _curvature_points(entry.curvature, task)
        xs, ys, names = zip(*points)
        ax.scatter(xs, ys)
        for x, y, name in points:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        fitted = entry.curvature_fits[task]
        if fitted:
            line = np.geomspace(min(xs), max(xs), 50)
            ax.plot(
                line,
                np.exp(fitted.intercept) * line**fitted.slope,
                color="tab:red",
                alpha=0.7,
                label=f"fit: slope {fitted.slope:.2f}, R^2 {fitted.r_squared:.2f} (n={fitted.n})",
            )
            ax.legend(fontsize=7)
        _log_axes(ax, "x", "y")
        ax.set_xlabel("1 / lambda_max at init", fontsize=8)
        ax.set_ylabel("chosen learning rate", fontsize=8)
        ax.set_title(task + ("" if fitted else " (fewer than 3 methods: no fit)"), fontsize=9)
    fig.suptitle("tuned learning rate vs 1 / top Hessian eigenvalue at init", fontsize=10)
    return fig


def _error_bars(below, above) -> list[np.ndarray]:
    """Error-bar lengths, clipped at 0: a constant cell's interval is (c, c) while its mean (summed by
    pyarrow) may differ from c in the last bit, and matplotlib refuses a negative length."""
    return [np.maximum(np.asarray(below, dtype=float), 0.0), np.maximum(np.asarray(above, dtype=float), 0.0)]


def _scores(plt, block: ProtocolBlock, protocol: str):
    tasks = block.tasks
    fig, axes = _grid(plt, len(tasks))
    for ax, task in zip(axes, tasks):
        metric = block.primary[task]
        rows = sorted((c for c in block.cells if c.task == task and c.metric == metric), key=lambda c: c.method)
        means = np.array([c.mean for c in rows])
        low = np.array([c.mean - c.ci_low if c.ci_low is not None and not math.isnan(c.ci_low) else 0 for c in rows])
        high = np.array(
            [c.ci_high - c.mean if c.ci_high is not None and not math.isnan(c.ci_high) else 0 for c in rows]
        )
        ax.bar(range(len(rows)), means, yerr=_error_bars(low, high), capsize=3, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(rows)), [c.method for c in rows], rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{task} ({metric})", fontsize=9)
    fig.suptitle(f"score per task, mean and 95% bootstrap CI ({protocol})", fontsize=10)
    return fig


def _aggregate(plt, block: ProtocolBlock, protocol: str):
    rows = block.aggregate[::-1]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(rows) + 1.5))
    y = np.arange(len(rows))
    iqm = np.array([r.iqm for r in rows])
    ax.errorbar(
        iqm, y, xerr=_error_bars(iqm - [r.iqm_low for r in rows], [r.iqm_high for r in rows] - iqm), fmt="o", capsize=3
    )
    ax.set_yticks(y, [r.method for r in rows], fontsize=8)
    label = "normalized score" if block.normalization else "raw primary metric"
    ax.set_xlabel(f"IQM of {label} (95% stratified-bootstrap CI)")
    ax.set_title(f"aggregate over tasks ({protocol})", fontsize=10)
    return fig


def _lr_sensitivity(plt, entry: SuiteBoard):
    """Validation score against learning rate per method and task; None without tuning trials."""
    trials = entry.tuning
    tasks = sorted({t.task for t in trials})
    if not tasks:
        return None
    fig, axes = _grid(plt, len(tasks))
    for ax, task in zip(axes, tasks):
        by_method = defaultdict(list)
        for t in trials:
            if t.task == task:
                by_method[t.method].append(t)
        for method, rows in sorted(by_method.items()):
            rows.sort(key=lambda r: r.lr)
            (line,) = ax.plot([r.lr for r in rows], [r.validation_mean for r in rows], marker="o", label=method)
            chosen = [r for r in rows if r.selected]
            if chosen:
                ax.plot([chosen[0].lr], [chosen[0].validation_mean], marker="*", markersize=14, color=line.get_color())
        _log_axes(ax, "x")
        ax.legend(fontsize=7)
        ax.set_ylabel(f"validation {rows[0].metric}", fontsize=8)
        ax.set_xlabel("learning rate")
        ax.set_title(task, fontsize=9)
    fig.suptitle("learning-rate sensitivity (tuning trials; star: selected)", fontsize=10)
    return fig


def _loss_curves(plt, entry: SuiteBoard, curves: pa.Table | None):
    """Mean training loss per step, a line per method and a panel per task with curves; None without."""
    run_ids = entry.run_ids
    if curves is not None and curves.num_rows and run_ids:
        picked = curves.filter(pc.is_in(curves["run_id"], value_set=pa.array(run_ids, pa.string())))
        rows = picked.select(["method", "task", "step", "loss"]).to_pylist()
    else:
        rows = []
    series: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["loss"] is not None:
            series[(r["task"], r["method"])][r["step"]].append(r["loss"])
    tasks = [t for t in entry.protocols[entry.main].tasks if any(task == t for task, _ in series)]
    if not tasks:
        return None
    fig, axes = _grid(plt, len(tasks))
    for ax, task in zip(axes, tasks):
        for (t, method), by_step in sorted(series.items()):
            if t != task:
                continue
            steps = sorted(by_step)
            ax.plot(steps, [np.mean(by_step[s]) for s in steps], label=method)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (mean over seeds)", fontsize=8)
        ax.set_title(task, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("training-loss curves", fontsize=10)
    return fig


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, score) points no other point beats on both (lower cost, higher score), by cost."""
    front: list[tuple[float, float]] = []
    best = -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _pareto(plt, block: ProtocolBlock, cost: dict[str, float | None], label: str):
    """IQM against a cost per method (``cost``: method -> its cost), with the Pareto front of the methods
    (reference rows, ``base`` and ``full-ft``, are drawn in grey for scale but are not on it) as a staircase
    over the plot's width, its points ringed; None unless at least two methods recorded the cost and they
    differ in it (one cost for all: no trade-off to draw)."""
    points = [
        (cost[r.method], r.iqm, r.method, r.is_reference) for r in block.aggregate if cost.get(r.method) is not None
    ]
    methods = [(x, y) for x, y, _, reference in points if not reference]
    if len({x for x, _ in methods}) < 2:
        return None
    xs = [p[0] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    for x, y, name, reference in points:
        ax.scatter([x], [y], color="tab:gray" if reference else "tab:blue", zorder=3)
        ax.annotate(
            name + (" (reference)" if reference else ""),
            (x, y),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
            color="tab:gray" if reference else "black",
        )
    front = pareto_front(methods)
    fx = [p[0] for p in front] + [max(x for x, _ in methods)]
    fy = [p[1] for p in front] + [front[-1][1]]
    ax.step(
        fx,
        fy,
        where="post",
        color="tab:red",
        alpha=0.6,
        label=f"Pareto front of the methods ({len(front)} of {len(methods)})",
    )
    ax.scatter(fx[:-1], fy[:-1], s=110, facecolors="none", edgecolors="tab:red", zorder=4)
    if min(xs) > 0 and max(xs) / min(xs) > 100:
        _log_axes(ax, "x")
    ax.legend(fontsize=7)
    ax.set_xlabel(label)
    ax.set_ylabel("IQM (" + ("normalized" if block.normalization else "raw") + ")")
    ax.set_title(f"score vs {label}", fontsize=10)
    return fig
