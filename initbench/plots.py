"""Leaderboard plots (matplotlib, Agg backend): one set of PNGs per suite of a board.

``write_plots(board, curves, folder)`` writes, per suite ``S`` (main protocol: tuned if present):

* ``S-scores.png``: each task's primary metric, mean per method with its 95% bootstrap CI;
* ``S-aggregate.png``: the IQM of normalized scores with its stratified-bootstrap CI;
* ``S-lr-sensitivity.png``: validation score vs learning rate per method (the tuning trials);
* ``S-loss-curves.png``: mean training loss per step, per method and task;
* ``S-pareto-params.png`` / ``S-pareto-init.png``: IQM vs trainable parameters / init seconds,
  with the Pareto front (no other method is both cheaper and better);
* ``S-pareto-forgetting.png`` (when runs recorded it): IQM vs forgetting, the mean over tasks of
  each method's KL from the base model (``initbench.forgetting``), with the front (no other
  method both forgets less and scores better);
* ``S-curvature-lr.png`` (when curvature at init was measured and rates were tuned): the chosen
  rate against 1 / lambda_max, log-log, a point per method and a panel per task, with the fitted
  line and its R^2 (``initbench.curvature_board``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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


def write_plots(board: dict[str, Any], curves: pa.Table | None, folder: Path) -> list[Path]:
    """Every plot of every suite of ``board`` under ``folder``.  Names are drawn as plain text
    (no mathtext: a method called ``a$b`` is a name, not an unbalanced formula)."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        return _write_plots(_pyplot(), board, curves, folder)


def _write_plots(plt, board: dict[str, Any], curves: pa.Table | None, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for entry in board["suites"]:
        main = entry.get("main")
        if main is None:
            continue
        block = entry["protocols"][main]
        prefix = entry["suite"]
        written.append(_scores(plt, block, folder / f"{prefix}-scores.png", main))
        written.append(_aggregate(plt, block, folder / f"{prefix}-aggregate.png", main))
        written.append(_lr_sensitivity(plt, entry, folder / f"{prefix}-lr-sensitivity.png"))
        written.append(_loss_curves(plt, entry, curves, folder / f"{prefix}-loss-curves.png"))
        cost = {r["method"]: r for r in entry.get("cost", [])}
        written.append(_pareto(plt, block, cost, "trainable_params", "trainable parameters",
                               folder / f"{prefix}-pareto-params.png"))
        written.append(_pareto(plt, block, cost, "init_seconds", "init seconds (incl. calibration)",
                               folder / f"{prefix}-pareto-init.png"))
        if entry.get("forgetting"):
            written.append(_pareto(plt, block, _mean_forgetting(entry["forgetting"]), "forgetting_kl",
                                   "forgetting (mean KL from the base model, nats)",
                                   folder / f"{prefix}-pareto-forgetting.png"))
        if any(_curvature_points(entry.get("curvature") or [], None)):
            written.append(_curvature_lr(plt, entry, folder / f"{prefix}-curvature-lr.png"))
    return written


def _curvature_points(cells: list[dict], task: str | None) -> list[tuple[float, float, str]]:
    """(1 / lambda_max, chosen rate, method) of the cells (of ``task``) with a positive lambda_max and a choice."""
    return [(1.0 / c["lambda_max"], c["chosen_lr"], c["method"]) for c in cells
            if (task is None or c["task"] == task) and c["chosen_lr"] and c["lambda_max"] > 0]


def _curvature_lr(plt, entry, path) -> Path:
    """Chosen rate against 1 / lambda_max on log-log axes, a point per method and a panel per task,
    with the fitted line of ``lr_prior.fit`` (``entry["curvature_fits"]``) and its R^2."""
    tasks = [t for t in entry["curvature_fits"] if _curvature_points(entry["curvature"], t)]
    fig, axes = _grid(plt, len(tasks))
    for ax, task in zip(axes, tasks):
        points = _curvature_points(entry["curvature"], task)
        xs, ys, names = zip(*points)
        ax.scatter(xs, ys)
        for x, y, name in points:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        fitted = entry["curvature_fits"][task]
        if fitted:
            line = np.geomspace(min(xs), max(xs), 50)
            ax.plot(line, np.exp(fitted["intercept"]) * line ** fitted["slope"], color="tab:red", alpha=0.7,
                    label=f"fit: slope {fitted['slope']:.2f}, R^2 {fitted['r_squared']:.2f} (n={fitted['n']})")
            ax.legend(fontsize=7)
        _log_axes(ax, "x", "y")
        ax.set_xlabel("1 / lambda_max at init", fontsize=8)
        ax.set_ylabel("chosen learning rate", fontsize=8)
        ax.set_title(task + ("" if fitted else " (fewer than 3 methods: no fit)"), fontsize=9)
    fig.suptitle("tuned learning rate vs 1 / top Hessian eigenvalue at init", fontsize=10)
    return _save(fig, path)


def _scores(plt, block, path, protocol) -> Path:
    tasks = block["tasks"]
    fig, axes = _grid(plt, len(tasks))
    for ax, task in zip(axes, tasks):
        metric = block["primary"][task]
        rows = sorted((c for c in block["cells"] if c["task"] == task and c["metric"] == metric),
                      key=lambda c: c["method"])
        means = np.array([c["mean"] for c in rows])
        low = np.array([c["mean"] - c["ci_low"] if c["ci_low"] is not None and not math.isnan(c["ci_low"]) else 0
                        for c in rows])
        high = np.array([c["ci_high"] - c["mean"] if c["ci_high"] is not None and not math.isnan(c["ci_high"]) else 0
                         for c in rows])
        ax.bar(range(len(rows)), means, yerr=[low, high], capsize=3, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(rows)), [c["method"] for c in rows], rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{task} ({metric})", fontsize=9)
    fig.suptitle(f"score per task, mean and 95% bootstrap CI ({protocol})", fontsize=10)
    return _save(fig, path)


def _aggregate(plt, block, path, protocol) -> Path:
    rows = block["aggregate"][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(rows) + 1.5))
    y = np.arange(len(rows))
    iqm = np.array([r["iqm"] for r in rows])
    ax.errorbar(iqm, y, xerr=[iqm - [r["iqm_low"] for r in rows], [r["iqm_high"] for r in rows] - iqm],
                fmt="o", capsize=3)
    ax.set_yticks(y, [r["method"] for r in rows], fontsize=8)
    label = "normalized score" if block["normalization"] else "raw primary metric"
    ax.set_xlabel(f"IQM of {label} (95% stratified-bootstrap CI)")
    ax.set_title(f"aggregate over tasks ({protocol})", fontsize=10)
    return _save(fig, path)


def _lr_sensitivity(plt, entry, path) -> Path:
    trials = entry.get("tuning") or []
    tasks = sorted({t["task"] for t in trials}) or ["(no tuning trials)"]
    fig, axes = _grid(plt, len(tasks))
    for ax, task in zip(axes, tasks):
        by_method = defaultdict(list)
        for t in trials:
            if t["task"] == task:
                by_method[t["method"]].append(t)
        for method, rows in sorted(by_method.items()):
            rows.sort(key=lambda r: r["lr"])
            line, = ax.plot([r["lr"] for r in rows], [r["validation_mean"] for r in rows], marker="o", label=method)
            chosen = [r for r in rows if r["selected"]]
            if chosen:
                ax.plot([chosen[0]["lr"]], [chosen[0]["validation_mean"]], marker="*", markersize=14,
                        color=line.get_color())
        if by_method:
            _log_axes(ax, "x")
            ax.legend(fontsize=7)
            ax.set_ylabel(f"validation {rows[0]['metric']}", fontsize=8)
        ax.set_xlabel("learning rate")
        ax.set_title(task, fontsize=9)
    fig.suptitle("learning-rate sensitivity (tuning trials; star: selected)", fontsize=10)
    return _save(fig, path)


def _loss_curves(plt, entry, curves, path) -> Path:
    block = entry["protocols"][entry["main"]]
    tasks = block["tasks"]
    fig, axes = _grid(plt, len(tasks))
    run_ids = entry.get("run_ids") or []
    if curves is not None and curves.num_rows and run_ids:
        picked = curves.filter(pc.is_in(curves["run_id"], value_set=pa.array(run_ids, pa.string())))
        rows = picked.select(["method", "task", "step", "loss"]).to_pylist()
    else:
        rows = []
    series: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["loss"] is not None:
            series[(r["task"], r["method"])][r["step"]].append(r["loss"])
    for ax, task in zip(axes, tasks):
        for (t, method), by_step in sorted(series.items()):
            if t != task:
                continue
            steps = sorted(by_step)
            ax.plot(steps, [np.mean(by_step[s]) for s in steps], label=method)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (mean over seeds)", fontsize=8)
        ax.set_title(task, fontsize=9)
        if any(t == task for t, _ in series):
            ax.legend(fontsize=7)
    fig.suptitle("training-loss curves", fontsize=10)
    return _save(fig, path)


def _mean_forgetting(rows: list[dict]) -> dict[str, dict[str, float]]:
    """method -> {"forgetting_kl": mean over its tasks of the per-task mean KL}."""
    by_method: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r["mean"])
    return {m: {"forgetting_kl": sum(v) / len(v)} for m, v in by_method.items()}


def _pareto(plt, block, cost, key, label, path) -> Path:
    points = [(cost[r["method"]].get(key) or 0.0, r["iqm"], r["method"]) for r in block["aggregate"] if r["method"] in cost]
    fig, ax = plt.subplots(figsize=(6, 4))
    if points:
        xs, ys, names = zip(*points)
        ax.scatter(xs, ys)
        for x, y, name in points:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front, best = [], -math.inf
        for x, y, _ in sorted(points, key=lambda p: (p[0], -p[1])):
            if y > best:
                front.append((x, y))
                best = y
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:red", alpha=0.6,
                label="Pareto front")
        if min(xs) > 0 and max(xs) / min(xs) > 100:
            _log_axes(ax, "x")
        ax.legend(fontsize=7)
    ax.set_xlabel(label)
    ax.set_ylabel("IQM (" + ("normalized" if block["normalization"] else "raw") + ")")
    ax.set_title(f"score vs {label}", fontsize=10)
    return _save(fig, path)
