"""Leaderboard tables: per-task statistics, the normalized aggregate, significance, convergence, cost.

Everything starts from ``aggregate`` (a pyarrow group-by of the final rows) and from
``initbench.stats``.  The choices, also printed under the tables:

* **Per task** (one cell per method, task and metric, over the evaluation seeds): mean,
  sample std (ddof=1) and a 95% **percentile bootstrap** interval of the mean
  (``BOOTSTRAP_REPS`` = 2,000 multinomial resamples of the seeds, seeded, so a rebuilt
  table prints the same numbers; the same estimator as ``stats.bootstrap_ci(method=
  "percentile")``, vectorized over cells).  n < 2: no interval.
* **Across tasks** (and the per-task table's "mean over tasks"): one *primary* metric per
  task, the one its rows record (the suite's ``primary_metric`` for the task, by default the
  first of its lm-eval ``metric_list`` under the first filter, e.g. ``exact_match,strict-match``;
  ``evaluation.task_primary_metric``), never an average of several metrics of one task;
  normalized per task as ``(score - floor) / (ceiling - floor)``
  (``stats.normalize``) with floor = the ``base`` reference's mean (untrained model, 0)
  and ceiling = the best mean on that task over every other row, the ``full-ft`` reference
  included (``stats.best_reference``; the row named in the table then scores 1 there).  Full
  fine-tuning is not taken as the ceiling by itself: at a LoRA learning rate (the fixed
  protocol) it can score below the methods, which would put them above 1.  Aggregate:
  the **IQM** over seeds x tasks (``stats.aggregate_iqm``) with a 95% **stratified
  bootstrap** interval (``stats.stratified_bootstrap_ci``, ``IQM_REPS`` resamples, seeds
  resampled within each task).  Without a ``base`` run the raw primary metric is used.  A task
  whose ceiling is at or below the floor (no row better than ``base``) is not normalizable: it is
  named as such and left out, instead of scoring its best row 1 and ``base`` 0 on a scale turned over.
* **Versus lora**: probability of improvement P(method > lora) (``stats``'
  Mann-Whitney form, averaged over tasks, with a stratified-bootstrap interval) and a
  two-sided Wilcoxon signed-rank test paired by (seed, task) on the normalized scores,
  Holm-corrected over all methods of the suite; ``*`` marks adjusted p <= 0.05.
* **Convergence**, from the training-loss curves: the area under the loss curve
  (``stats.auc``: time-averaged loss) and the first step at which the EMA-smoothed loss
  (``stats.steps_to_reach``, alpha 0.1) reaches ``CONVERGENCE_FRACTION`` = 1.1 x
  ``lora``'s mean final *smoothed* loss on that task (the same EMA as the curve it is compared
  with: a raw final loss is one batch, and a lagging EMA of a noisy curve need not reach 1.1 x a
  lucky last batch even for ``lora`` itself); ``k/n`` seeds reached it.
* **Curvature at init** (where ``initbench curvature`` measured it; ``initbench.curvature_board``):
  per task, lambda_max beside the rate lr-prior predicts from it, the tuned rate and whether that
  was the lowest or highest rate tried, with the fit of log(tuned rate) on log(1 / lambda_max)
  (``lr_prior.fit``: slope, R^2, r with its Fisher-z interval); and, from a results folder's
  selection files, how often the chosen rate sat on the edge of its grid, per grid kind.
* **Cost** per run (mean over final runs): trainable parameters, init and train seconds,
  peak memory, training tokens, calibration examples, FLOPs; tuning cost is the sum over
  the method's trials (count, seconds, FLOPs), and the total adds it to the finals'.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tabulate import tabulate

from initbench import stats
from initbench.counted import read_results
from initbench.results import CURVE_SUFFIX

BOOTSTRAP_REPS = 2_000
IQM_REPS = 5_000
POI_REPS = 1_000
CONFIDENCE = 0.95
ALPHA = 0.05
CONVERGENCE_FRACTION = 1.1
CONVERGENCE_EMA = 0.1  # the smoothing of the loss curves compared, and of lora's final loss that sets the target
REFERENCE_METHOD = "lora"
FLOOR_METHOD = "base"
KEYS = ["suite", "suite_hash", "method", "is_reference", "task", "metric"]


# --------------------------------------------------------------------------- per task


def aggregate(table: pa.Table, ci: bool = True) -> pa.Table:
    """Mean, std (sample, ddof=1), seed count and (``ci``) the 95% percentile-bootstrap interval
    of the mean per (suite, suite_hash, method, task, metric) over ok final runs."""
    keep = pc.and_(pc.equal(table["status"], "ok"), pc.is_valid(table["metric"]))
    if "phase" in table.schema.names:
        keep = pc.and_(keep, pc.equal(table["phase"], "final"))
    ok = table.filter(keep)
    specs = [("value", "mean"), ("value", "stddev", pc.VarianceOptions(ddof=1)), ("seed", "count_distinct")]
    if ci:
        specs.append(("value", "list"))
    grouped = ok.group_by(KEYS, use_threads=False).aggregate(specs)
    grouped = grouped.rename_columns(KEYS + ["mean", "std", "seeds"] + (["values"] if ci else []))
    if ci:
        low, high = bootstrap_cells(grouped["values"])
        grouped = grouped.drop_columns(["values"]).append_column("ci_low", pa.array(low)).append_column(
            "ci_high", pa.array(high))
    return grouped.sort_by([(k, "ascending") for k in ("suite", "suite_hash", "task", "metric", "method")])


def bootstrap_cells(values: pa.ChunkedArray | pa.Array, reps: int = BOOTSTRAP_REPS, confidence: float = CONFIDENCE,
                    seed: int = stats.DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of the mean of every list in ``values`` (one per cell).

    Cells with the same number of values n share one draw of ``reps`` multinomial weight
    vectors (seeded), so the whole table costs a few matrix products: each cell's interval
    is exactly a percentile bootstrap of its own mean.  n < 2: NaN; a constant cell: (c, c)
    (``stats.bootstrap_ci``'s conventions)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False).astype(int)
    flat = pc.list_flatten(values).to_numpy(zero_copy_only=False).astype(float)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    low = np.full(len(lengths), math.nan)
    high = np.full(len(lengths), math.nan)
    alpha = 1.0 - confidence
    for n in np.unique(lengths):
        if n < 2:
            continue
        cells = np.flatnonzero(lengths == n)
        x = np.sort(flat[offsets[cells][:, None] + np.arange(n)], axis=1)  # (cells, n); sorted: row order is moot
        rng = np.random.default_rng([seed, int(n)])
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=reps).T / n  # (n, reps)
        chunk = max(1, 4_000_000 // reps)
        for start in range(0, len(cells), chunk):
            means = x[start:start + chunk] @ weights  # (chunk, reps)
            lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2], axis=1)
            low[cells[start:start + chunk]], high[cells[start:start + chunk]] = lo, hi
        constant = np.all(x == x[:, :1], axis=1)
        low[cells[constant]] = high[cells[constant]] = x[constant, 0]
    return low, high


def failures(table: pa.Table) -> pa.Table:
    """Runs that did not finish ok, one row per run, with their reason."""
    bad = table.filter(pc.not_equal(table["status"], "ok"))
    return bad.select(["suite", "method", "task", "seed", "status", "error"]).group_by(
        ["suite", "method", "task", "seed", "status", "error"]).aggregate([])


# --------------------------------------------------------------------------- the whole board


def _primary(recorded: str | None, lm_eval_task: str | None, metrics: list[str]) -> tuple[str, bool]:
    """A task's primary metric and whether higher is better: the one its rows record
    (``primary_metric``, schema 6: the suite's choice or the task's default), else the lm-eval
    task's default (``evaluation.primary_metric``: first metric, first filter) for older files,
    else the first recorded metric in name order (synthetic tables, a task YAML not installed)."""
    keys: dict[str, bool] = {}
    if lm_eval_task:
        try:
            from initbench.evaluation import metric_keys

            keys = metric_keys(lm_eval_task)
        except Exception:  # a task YAML that is not installed here
            keys = {}
    for candidate in (recorded, next(iter(keys), None)):
        if candidate and candidate in metrics:
            return candidate, keys.get(candidate, True)
    return sorted(metrics)[0], True


def build(table: pa.Table, curves: pa.Table | None = None, curvature: pa.Table | None = None) -> dict[str, Any]:
    """Every statistic of the leaderboard, as plain data: one entry per (suite, spec hash)
    with a block per protocol present (``tuned`` first), convergence, cost and tuning, and
    curvature at init where ``curvature`` (``initbench.curvature_table``) measured it."""
    from initbench.counted import final_rows, has_tuned
    from initbench.curvature_board import curvature_cells, curvature_fits

    if "protocol" not in table.schema.names:
        from initbench.results import upgrade

        table = upgrade(table)
    protocols = (["tuned"] if has_tuned(table) else []) + ["fixed"]
    board: dict[str, Any] = {"suites": [], "failures": failures(table).to_pylist()}
    suite_keys = sorted(set(zip(table["suite"].to_pylist(), table["suite_hash"].to_pylist())))
    for suite, suite_hash in suite_keys:
        st = table.filter(pc.and_(pc.equal(table["suite"], suite), pc.equal(table["suite_hash"], suite_hash)))
        entry: dict[str, Any] = {"suite": suite, "suite_hash": suite_hash, "protocols": {}}
        for protocol in protocols:
            view = final_rows(st, protocol)
            cells = aggregate(view).to_pylist()
            if not cells:
                continue
            block = {"cells": cells}
            block.update(_across_tasks(view, cells))
            entry["protocols"][protocol] = block
        main = next(iter(entry["protocols"]), None)
        if main is None:
            board["suites"].append(entry)
            continue
        entry["main"] = main
        view = final_rows(st, main)
        entry["run_ids"] = sorted(set(view["run_id"].to_pylist()))
        entry["convergence"] = _convergence(view, curves, entry["protocols"][main]["primary"])
        entry["cost"] = _cost(view, st)
        entry["diagnostics"] = _diagnostics(view)
        entry["forgetting"] = _forgetting(view)
        entry["learning_rates"] = _learning_rates(view)
        entry["tuning"] = _tuning(st, entry["protocols"][main]["primary"])
        entry["curvature"] = curvature_cells(st, curvature)
        entry["curvature_fits"] = curvature_fits(entry["curvature"])
        board["suites"].append(entry)
    return board


def _matrix_by_method(view: pa.Table, primary: dict[str, tuple[str, bool]]) -> dict[str, dict[str, dict[int, float]]]:
    """method -> task -> seed -> value of the task's primary metric (ok runs)."""
    ok = view.filter(pc.equal(view["status"], "ok"))
    out: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for task, (metric, _) in primary.items():
        rows = ok.filter(pc.and_(pc.equal(ok["task"], task), pc.equal(ok["metric"], metric)))
        for m, s, v in zip(rows["method"].to_pylist(), rows["seed"].to_pylist(), rows["value"].to_pylist()):
            out[m][task][s] = v
    return out


def _across_tasks(view: pa.Table, cells: list[dict]) -> dict[str, Any]:
    tasks = sorted({c["task"] for c in cells})
    lm_tasks = dict(zip(view["task"].to_pylist(), view["lm_eval_task"].to_pylist()))
    recorded = {t: p for t, p in zip(view["task"].to_pylist(), view["primary_metric"].to_pylist()) if p}
    primary = {t: _primary(recorded.get(t), lm_tasks.get(t), sorted({c["metric"] for c in cells if c["task"] == t}))
               for t in tasks}
    per = _matrix_by_method(view, primary)
    reference = {c["method"]: c["is_reference"] for c in cells}
    higher = np.array([primary[t][1] for t in tasks])

    def means(method: str) -> np.ndarray:
        return np.array([np.mean(list(per[method][t].values())) if per[method].get(t) else np.nan for t in tasks])

    normalized = FLOOR_METHOD in per
    if normalized:
        floor = means(FLOOR_METHOD)
        candidates = {m: means(m)[None, :] for m in per if m != FLOOR_METHOD}
        ceiling = stats.best_reference(candidates, exclude=(), higher_is_better=higher) if candidates else floor
        ceiling_from = [next((m for m, v in candidates.items() if v[0, i] == c), "base") for i, c in enumerate(ceiling)]
        # a ceiling at or below the floor (above it, for lower-is-better) would turn the scale over
        # or divide by zero: such a task is not normalizable and is left out of the aggregate
        with np.errstate(invalid="ignore"):
            unusable = ~(np.where(higher, ceiling - floor, floor - ceiling) > 0)
        not_normalizable = [t for t, bad in zip(tasks, unusable) if bad]
        ceiling = np.where(unusable, np.nan, ceiling)
    matrices: dict[str, np.ndarray] = {}
    for method in per:
        seeds = sorted(set.intersection(*[set(per[method].get(t, {})) for t in tasks]))
        if not seeds:
            continue
        m = np.array([[per[method][t][s] for t in tasks] for s in seeds], dtype=float)
        if normalized:
            with np.errstate(all="ignore"):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    m = stats.normalize(m, floor, ceiling)
            if np.isnan(m).any():  # a task with ceiling == floor cannot be normalized: drop it for everyone
                keep = ~np.isnan(m).any(axis=0)
                m = m[:, keep]
                if not m.size:
                    continue
        matrices[method] = (m, seeds)
    aggregate_rows = []
    for method, (m, seeds) in matrices.items():
        low, high = stats.stratified_bootstrap_ci(m, stats.aggregate_iqm, reps=IQM_REPS, confidence=CONFIDENCE)
        aggregate_rows.append({"method": method, "is_reference": reference.get(method, False),
                               "iqm": float(stats.aggregate_iqm(m)), "iqm_low": float(low), "iqm_high": float(high),
                               "mean": float(stats.aggregate_mean(m)), "seeds": len(seeds), "tasks": m.shape[1]})
    aggregate_rows.sort(key=lambda r: -r["iqm"])
    pairwise = []
    if REFERENCE_METHOD in matrices:
        ref, ref_seeds = matrices[REFERENCE_METHOD]
        for method, (m, seeds) in sorted(matrices.items()):
            if method == REFERENCE_METHOD or m.shape[1] != ref.shape[1]:
                continue
            poi = float(stats.probability_of_improvement(m, ref))
            poi_low, poi_high = stats.probability_of_improvement_ci(m, ref, reps=POI_REPS, confidence=CONFIDENCE)
            common = sorted(set(seeds) & set(ref_seeds))
            x = m[[seeds.index(s) for s in common]]
            y = ref[[ref_seeds.index(s) for s in common]]
            test = stats.paired_test(x, y)
            pairwise.append({"method": method, "poi": poi, "poi_low": float(poi_low), "poi_high": float(poi_high),
                             "pairs": test.n_pairs, "mean_diff": test.mean_diff, "p_wilcoxon": test.wilcoxon_pvalue,
                             "p_t": test.t_pvalue, "min_p": test.min_wilcoxon_pvalue})
        adjusted = stats.holm([p["p_wilcoxon"] for p in pairwise])
        marks = stats.significant([p["p_wilcoxon"] for p in pairwise], ALPHA)
        for p, adj, mark in zip(pairwise, adjusted, marks):
            p["p_holm"], p["significant"] = float(adj), bool(mark)
    return {
        "tasks": tasks,
        "primary": {t: primary[t][0] for t in tasks},
        "normalization": ({"floor": FLOOR_METHOD,
                           "ceiling": {t: c for t, c in zip(tasks, ceiling_from) if t not in not_normalizable},
                           "floor_values": dict(zip(tasks, floor.tolist())),
                           "ceiling_values": {t: c for t, c in zip(tasks, ceiling.tolist()) if t not in not_normalizable},
                           "not_normalizable": not_normalizable} if normalized else None),
        "aggregate": aggregate_rows,
        "pairwise": pairwise,
    }


def _curves_by_run(curves: pa.Table | None, run_ids: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if curves is None or curves.num_rows == 0:
        return {}
    mask = pc.is_in(curves["run_id"], value_set=pa.array(sorted(run_ids), pa.string()))
    picked = curves.filter(mask).sort_by([("run_id", "ascending"), ("step", "ascending")])
    out: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for rid, step, loss in zip(picked["run_id"].to_pylist(), picked["step"].to_pylist(), picked["loss"].to_pylist()):
        out[rid][0].append(step)
        out[rid][1].append(math.nan if loss is None else loss)
    return {k: (np.array(s, dtype=float), np.array(v, dtype=float)) for k, (s, v) in out.items()}


def _convergence(view: pa.Table, curves: pa.Table | None, primary: dict[str, str]) -> list[dict]:
    ok = view.filter(pc.equal(view["status"], "ok"))
    runs = sorted(set(zip(ok["method"].to_pylist(), ok["task"].to_pylist(), ok["seed"].to_pylist(),
                          ok["run_id"].to_pylist())))
    by_run = _curves_by_run(curves, {r[3] for r in runs})
    if not by_run:
        return []
    finals: dict[str, list[float]] = defaultdict(list)
    for method, task, _, rid in runs:
        if method == REFERENCE_METHOD and rid in by_run:
            finals[task].append(float(stats.ema(by_run[rid][1], CONVERGENCE_EMA)[-1]))
    target = {t: CONVERGENCE_FRACTION * float(np.mean(v)) for t, v in finals.items()}
    rows: dict[tuple[str, str], dict] = {}
    for method, task, _, rid in runs:
        if rid not in by_run:
            continue
        steps, losses = by_run[rid]
        row = rows.setdefault((method, task), {"method": method, "task": task, "auc": [], "reached": [], "n": 0,
                                               "target": target.get(task)})
        row["n"] += 1
        row["auc"].append(stats.auc(losses, steps))
        if task in target:
            hit = stats.steps_to_reach(losses, steps, target[task], alpha=CONVERGENCE_EMA)
            if hit is not None:
                row["reached"].append(hit)
    out = []
    for row in rows.values():
        out.append({"method": row["method"], "task": row["task"], "auc": float(np.mean(row["auc"])),
                    "steps_to_target": float(np.mean(row["reached"])) if row["reached"] else None,
                    "reached": len(row["reached"]), "runs": row["n"], "target_loss": row["target"]})
    return sorted(out, key=lambda r: (r["task"], r["method"]))


def _per_run(table: pa.Table, columns: list[str] | None = None) -> pa.Table:
    """One row per run (the first metric row carries the run's compute and diagnostics)."""
    columns = COST_COLUMNS if columns is None else columns
    first = table.group_by(["run_id"], use_threads=False).aggregate([(c, "first") for c in columns + ["method"]])
    return first.rename_columns([c.removesuffix("_first") for c in first.column_names])


DIAGNOSTIC_COLUMNS = ["init_update_erank", "final_update_erank", "relative_weight_change"]


def _diagnostics(view: pa.Table) -> list[dict]:
    """Per method, the rich/lazy diagnostics (``initbench.diagnostics``) averaged over the runs that
    recorded them, beside the trainable parameters; empty when no run switched them on."""
    if not all(c in view.schema.names for c in DIAGNOSTIC_COLUMNS):
        return []
    runs = _per_run(view, ["trainable_params", "base_weights_modified", *DIAGNOSTIC_COLUMNS])
    runs = runs.filter(pc.is_valid(runs["final_update_erank"]))
    if runs.num_rows == 0:
        return []
    runs = runs.append_column("modified", pc.cast(runs["base_weights_modified"], pa.int64()))
    agg = runs.group_by(["method"], use_threads=False).aggregate(
        [("run_id", "count"), ("trainable_params", "mean"), ("modified", "max")]
        + [(c, "mean") for c in DIAGNOSTIC_COLUMNS])
    return sorted(({"method": r["method"], "runs": r["run_id_count"], "trainable_params": r["trainable_params_mean"],
                    "base_weights_modified": bool(r["modified_max"]),
                    **{c: r[f"{c}_mean"] for c in DIAGNOSTIC_COLUMNS}} for r in agg.to_pylist()),
                  key=lambda r: r["method"])


def _forgetting(view: pa.Table) -> list[dict]:
    """Per (method, task), the mean forgetting (``initbench.forgetting``) over the ok final runs that
    recorded it, with a 95% percentile-bootstrap interval over seeds and the held set's name; empty
    when no run recorded it (older files, or offline without the held text)."""
    if "forgetting_kl" not in view.schema.names:
        return []
    runs = _per_run(view.filter(pc.equal(view["status"], "ok")), ["task", "forgetting_kl", "forgetting_set"])
    runs = runs.filter(pc.is_valid(runs["forgetting_kl"]))
    if runs.num_rows == 0:
        return []
    cells = runs.group_by(["method", "task", "forgetting_set"], use_threads=False).aggregate(
        [("forgetting_kl", "list"), ("forgetting_kl", "mean")])
    low, high = bootstrap_cells(cells["forgetting_kl_list"])
    return sorted(({"method": r["method"], "task": r["task"], "held_set": r["forgetting_set"],
                    "seeds": len(r["forgetting_kl_list"]), "mean": r["forgetting_kl_mean"],
                    "ci_low": float(lo), "ci_high": float(hi)}
                   for r, lo, hi in zip(cells.to_pylist(), low, high)), key=lambda r: (r["task"], r["method"]))


def forgetting_by_method(rows: list[dict]) -> dict[str, float]:
    """method -> the mean over its tasks of the per-task mean forgetting (``_forgetting``'s rows)."""
    by_method: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r["mean"])
    return {m: sum(v) / len(v) for m, v in sorted(by_method.items())}


def _learning_rates(view: pa.Table) -> dict[str, dict[str, list[float]]]:
    """method -> task -> the learning rates its ok final runs trained at (under the tuned protocol, the
    rate tuning chose; under the fixed one, the suite's); methods that do not train are left out."""
    ok = view.filter(pc.and_(pc.equal(view["status"], "ok"), pc.is_valid(view["learning_rate"])))
    rates: dict[str, dict[str, set[float]]] = defaultdict(lambda: defaultdict(set))
    for method, task, lr in zip(ok["method"].to_pylist(), ok["task"].to_pylist(), ok["learning_rate"].to_pylist()):
        rates[method][task].add(lr)
    return {m: {t: sorted(v) for t, v in sorted(by_task.items())} for m, by_task in sorted(rates.items())}


REUSE_COLUMNS = ["init_reused", "train_reused"]  # the run restored its init / training from an earlier run
COST_COLUMNS = ["trainable_params", "init_seconds", "train_seconds", "wall_seconds", "peak_memory_bytes",
                "train_tokens", "calibration_examples", "flops", "train_tokens_per_second", "mfu"]


def _cost(view: pa.Table, suite_table: pa.Table) -> list[dict]:
    """Per method, the mean cost of a run; ``wall_seconds`` over the runs that computed their init and
    training (a run that restored them, ``initbench.init_cache`` / ``train_cache``, took less wall time
    than the run costs) where there are any."""
    runs = _per_run(view, COST_COLUMNS + [c for c in REUSE_COLUMNS if c in view.column_names])
    reused = [pc.fill_null(runs[c], False) for c in REUSE_COLUMNS if c in runs.column_names]
    if reused:
        restored = reused[0] if len(reused) == 1 else pc.or_(*reused)
        computed = runs.filter(pc.invert(restored))["method"].to_pylist()
        keep = pc.or_(pc.invert(restored), pc.invert(pc.is_in(runs["method"], pa.array(computed, pa.string()))))
        wall = pc.if_else(keep, runs["wall_seconds"], pa.scalar(None, pa.float64()))
        runs = runs.set_column(runs.column_names.index("wall_seconds"), "wall_seconds", wall)
    agg = runs.group_by(["method"], use_threads=False).aggregate(
        [(c, "mean") for c in COST_COLUMNS if c != "peak_memory_bytes"]
        + [("peak_memory_bytes", "max"), ("flops", "sum"), ("run_id", "count")])
    trials = suite_table.filter(pc.equal(suite_table["phase"], "trial"))
    tuning: dict[str, dict] = {}
    if trials.num_rows:
        tr = _per_run(trials).group_by(["method"], use_threads=False).aggregate(
            [("run_id", "count"), ("wall_seconds", "sum"), ("flops", "sum")])
        tuning = {r["method"]: r for r in tr.to_pylist()}
    out = []
    for r in agg.to_pylist():
        t = tuning.get(r["method"], {})
        out.append({"method": r["method"], "runs": r["run_id_count"],
                    **{c: r[f"{c}_mean"] for c in COST_COLUMNS if c != "peak_memory_bytes"},
                    "peak_memory_bytes": r["peak_memory_bytes_max"],
                    "tuning_trials": t.get("run_id_count", 0), "tuning_seconds": t.get("wall_seconds_sum") or 0.0,
                    "tuning_flops": t.get("flops_sum") or 0.0,
                    "total_flops": (r["flops_sum"] or 0.0) + (t.get("flops_sum") or 0.0)})
    return sorted(out, key=lambda r: r["method"])


def _tuning(suite_table: pa.Table, primary: dict[str, str]) -> list[dict]:
    """Per (method, task): the validation mean of the primary metric per trial rate, and the chosen rate."""
    trials = suite_table.filter(pc.and_(pc.equal(suite_table["phase"], "trial"), pc.equal(suite_table["status"], "ok")))
    chosen = suite_table.filter(pc.and_(pc.equal(suite_table["protocol"], "tuned"), pc.equal(suite_table["phase"], "final")))
    picked = {(m, t): lr for m, t, lr in zip(chosen["method"].to_pylist(), chosen["task"].to_pylist(),
                                             chosen["selected_lr"].to_pylist())}
    rows: dict[tuple[str, str, float], list[float]] = defaultdict(list)
    for m, t, metric, lr, v in zip(trials["method"].to_pylist(), trials["task"].to_pylist(),
                                   trials["metric"].to_pylist(), trials["learning_rate"].to_pylist(),
                                   trials["value"].to_pylist()):
        if metric == primary.get(t):
            rows[(m, t, lr)].append(v)
    return [{"method": m, "task": t, "lr": lr, "metric": primary.get(t), "validation_mean": float(np.mean(v)),
             "seeds": len(v), "selected": picked.get((m, t)) == lr}
            for (m, t, lr), v in sorted(rows.items())]


# --------------------------------------------------------------------------- text


def render(path: Path, fmt: str = "github") -> str:
    """The leaderboard of every results file under ``path`` as text (tabulate format ``fmt``), with the
    curvature measured there and, when it holds selection files, how often they chose a grid's edge."""
    from initbench.curvature_table import read_table
    from initbench.tuning_grid import edge_report

    table = read_results(path)
    if table.num_rows == 0:
        return f"no results under {path}"
    text = render_board(build(table, read_results(path, CURVE_SUFFIX), read_table(path)), fmt)
    edges = edge_report(path) if Path(path).is_dir() else []
    return text + ("\n\n" + render_edges(edges, fmt) if edges else "")


PROTOCOL_TITLES = {"tuned": "Tuned protocol: learning rate chosen per method and task on validation, scored on test",
                   "fixed": "At the suite's default learning rate (fixed protocol)"}


def render_board(board: dict[str, Any], fmt: str = "github", level: int = 2) -> str:
    h = "#" * level
    sections = []
    for entry in board["suites"]:
        parts = [f"{h} Suite `{entry['suite']}` (spec {entry['suite_hash']})"]
        for protocol, block in entry["protocols"].items():
            parts.append(f"{h}# {PROTOCOL_TITLES[protocol]}\n\n" + _suite_table(block["cells"], block["primary"], fmt))
            parts.append(_aggregate_table(block, fmt))
            if block["pairwise"]:
                parts.append(_pairwise_table(block["pairwise"], fmt))
        if entry.get("tuning"):
            parts.append(_tuning_table(entry["tuning"], fmt))
        if entry.get("convergence"):
            parts.append(_convergence_table(entry["convergence"], fmt))
        if entry.get("cost"):
            parts.append(_cost_table(entry["cost"], fmt))
        if entry.get("diagnostics"):
            parts.append(_diagnostics_table(entry["diagnostics"], fmt))
        if entry.get("forgetting"):
            parts.append(_forgetting_table(entry["forgetting"], fmt))
        if entry.get("curvature"):
            parts.append(_curvature_tables(entry["curvature"], entry["curvature_fits"], fmt))
        sections.append("\n\n".join(parts))
    if board["failures"]:
        lines = [[r["suite"], r["method"], r["task"], r["seed"], r["status"], r["error"] or ""] for r in board["failures"]]
        sections.append(f"{h} Runs not ok\n\n" + tabulate(lines, ["suite", "method", "task", "seed", "status", "reason"],
                                                          tablefmt=fmt))
    return "\n\n".join(sections)


def _suite_table(rows: list[dict], primary: dict[str, str], fmt: str) -> str:
    """Per method, a cell per (task, metric) and the mean over tasks of each task's primary metric
    (blank unless the method has every task's primary metric)."""
    columns = sorted({(r["task"], r["metric"]) for r in rows})
    methods = sorted({(not r["is_reference"], r["method"]) for r in rows})  # reference rows first
    cell = {(r["method"], r["task"], r["metric"]): r for r in rows}
    lines = []
    for not_reference, method in methods:
        line = [method + ("" if not_reference else " (reference)")]
        task_means = []
        for task, metric in columns:
            r = cell.get((method, task, metric))
            line.append(_fmt(r) if r else "")
            if r and primary.get(task) == metric:
                task_means.append(r["mean"])
        line.append(f"{sum(task_means) / len(task_means):.4f}" if len(task_means) == len(primary) else "")
        lines.append(line)
    several = {task for task, _ in columns if len([m for t, m in columns if t == task]) > 1}
    headers = (["method"] + [f"{task} ({metric}{', primary' if task in several and primary.get(task) == metric else ''})"
                             for task, metric in columns] + ["mean over tasks (primary metrics)"])
    note = (f"\n\nCells: mean ± std [95% percentile-bootstrap CI of the mean, {BOOTSTRAP_REPS:,} resamples] "
            "(n = seeds).")
    return tabulate(lines, headers, tablefmt=fmt) + note


def _num(x, spec=".4f") -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _fmt(r: dict) -> str:
    std = r["std"]
    spread = f" ± {std:.4f}" if std is not None and not math.isnan(std) else ""
    low, high = r.get("ci_low"), r.get("ci_high")
    ci = f" [{low:.4f}, {high:.4f}]" if low is not None and not math.isnan(low) else ""
    return f"{r['mean']:.4f}{spread}{ci} (n={r['seeds']})"


def _aggregate_table(block: dict, fmt: str) -> str:
    norm = block["normalization"]
    lines = [[r["method"] + (" (reference)" if r["is_reference"] else ""), f"{r['iqm']:.4f}",
              f"[{r['iqm_low']:.4f}, {r['iqm_high']:.4f}]", f"{r['mean']:.4f}", r["seeds"], r["tasks"]]
             for r in block["aggregate"]]
    what = ("normalized score, per task (score - base) / (ceiling - base), ceiling = "
            + (", ".join(f"{t}: {c}" for t, c in norm["ceiling"].items()) or "none")
            + "".join(f"; {t}: not normalizable (no row better than base), left out" for t in norm.get("not_normalizable", []))
            if norm else "raw primary metric (no `base` run, so not normalized)")
    primary = ", ".join(f"{t}: {m}" for t, m in block["primary"].items())
    return (f"Across tasks ({what}; primary metrics {primary}):\n\n"
            + tabulate(lines, ["method", "IQM", f"95% CI (stratified bootstrap, {IQM_REPS:,})", "mean", "seeds", "tasks"],
                       tablefmt=fmt))


def _pairwise_table(rows: list[dict], fmt: str) -> str:
    lines = [[r["method"], f"{r['poi']:.3f} [{r['poi_low']:.3f}, {r['poi_high']:.3f}]", _num(r["mean_diff"], "+.4f"),
              r["pairs"], _num(r["p_wilcoxon"], ".3g"), _num(r["p_holm"], ".3g") + (" *" if r["significant"] else "")]
             for r in rows]
    return (f"Versus `{REFERENCE_METHOD}` (P(X > lora) with 95% stratified-bootstrap CI; Wilcoxon signed-rank paired by "
            f"(seed, task), Holm-adjusted; * = significant at {ALPHA}):\n\n"
            + tabulate(lines, ["method", "P(X > lora)", "mean diff", "pairs", "p", "p (Holm)"], tablefmt=fmt))


def _tuning_table(rows: list[dict], fmt: str) -> str:
    lrs = sorted({r["lr"] for r in rows})
    cells: dict[tuple[str, str], dict[float, dict]] = defaultdict(dict)
    for r in rows:
        cells[(r["method"], r["task"])][r["lr"]] = r
    lines = []
    for (method, task), by_lr in sorted(cells.items()):
        chosen = next((lr for lr, r in by_lr.items() if r["selected"]), None)
        lines.append([method, task, next(iter(by_lr.values()))["metric"], _num(chosen, "g")]
                     + [(f"**{by_lr[lr]['validation_mean']:.4f}**" if by_lr[lr]["selected"] else
                         f"{by_lr[lr]['validation_mean']:.4f}") if lr in by_lr else "" for lr in lrs])
    return ("Tuning trials (validation mean of the primary metric over tuning seeds; chosen rate in bold):\n\n"
            + tabulate(lines, ["method", "task", "metric", "selected lr"] + [f"lr {lr:g}" for lr in lrs], tablefmt=fmt))


def _convergence_table(rows: list[dict], fmt: str) -> str:
    lines = [[r["method"], r["task"], f"{r['auc']:.4f}",
              (_num(r["steps_to_target"], ".1f") or "never") + f" ({r['reached']}/{r['runs']})",
              _num(r["target_loss"])] for r in rows]
    return (f"Convergence (training loss: area under the curve = time-averaged loss; steps until the EMA(0.1) loss "
            f"reaches {CONVERGENCE_FRACTION}x {REFERENCE_METHOD}'s mean final EMA loss):\n\n"
            + tabulate(lines, ["method", "task", "loss AUC", f"steps to {CONVERGENCE_FRACTION}x lora final", "target"],
                       tablefmt=fmt))


def _diagnostics_table(rows: list[dict], fmt: str) -> str:
    lines = [[r["method"], r["runs"], _num(r["trainable_params"], ",.0f"), "yes" if r["base_weights_modified"] else "no",
              _num(r["init_update_erank"], ".2f"), _num(r["final_update_erank"], ".2f"),
              _num(r["relative_weight_change"], ".2e")] for r in rows]
    return ("Rich or lazy (runs with INITBENCH_DIAGNOSTICS=1; initbench.diagnostics): entropy effective rank of the "
            "update scale*B[M]A after init and after training, mean over adapted layers (at most the LoRA rank); "
            "relative change ||W_final - W0||_F / ||W0||_F of the adapted weights, mean over layers:\n\n"
            + tabulate(lines, ["method", "runs", "trainable params", "base offset", "erank at init", "erank final",
                               "rel. weight change"], tablefmt=fmt))


def _forgetting_table(rows: list[dict], fmt: str) -> str:
    lines = [[r["method"], r["task"], r["seeds"], _num(r["mean"], ".4f"),
              f"[{_num(r['ci_low'], '.4f')}, {_num(r['ci_high'], '.4f')}]"] for r in rows]
    sets = sorted({r["held_set"] for r in rows})
    return ("Forgetting (initbench.forgetting): mean per-token KL(p_base || p_trained) in nats on held general text "
            f"({'; '.join(sets)}), mean over seeds with a 95% bootstrap interval; lower moved less:\n\n"
            + tabulate(lines, ["method", "task", "seeds", "KL from base", "95% CI"], tablefmt=fmt))


def _curvature_tables(cells: list[dict], fits: dict[str, dict | None], fmt: str) -> str:
    """Per task: method | lambda_max (converged?) | predicted rate | chosen rate | on the grid's edge,
    and the fit of the chosen rate on 1 / lambda_max (``initbench.curvature_board``)."""
    parts = []
    for task, fitted in fits.items():
        rows = [c for c in cells if c["task"] == task]
        lines = [[c["method"], f"{c['lambda_max']:.4g} ("
                  + ("yes" if c["converged"] == c["seeds"] else f"no: {c['converged']}/{c['seeds']} seeds") + ")",
                  _num(c["predicted_lr"], ".3g"), _num(c["chosen_lr"], ".3g"),
                  c["edge"] + (f" ({len(c['grid'])} rates {c['grid'][0]:.3g}-{c['grid'][-1]:.3g})" if c["grid"] else "")]
                 for c in rows]
        sources = sorted({c["reference_lr_source"] for c in rows})
        line = ("fit of log(chosen rate) on log(1 / lambda_max): " + (
            f"slope {fitted['slope']:.3f}, R^2 {fitted['r_squared']:.3f}, r {fitted['pearson_r']:.3f} "
            + (f"[95% CI {fitted['r_ci'][0]:.3f}, {fitted['r_ci'][1]:.3f}]" if _num(fitted["r_ci"][0]) else
               "(no Fisher-z interval with n <= 3)") + f", n = {fitted['n']}"
            if fitted else "fewer than three methods with a chosen rate, no fit"))
        parts.append(f"Curvature at init, task `{task}` (lambda_max: top Hessian eigenvalue of the training loss "
                     f"after init, mean over seeds, initbench.curvature; predicted: lr-prior, calibrated on "
                     f"{rows[0]['reference']}'s {' / '.join(sources)} rate; edge: the chosen rate is the lowest or "
                     f"highest rate tried):\n\n"
                     + tabulate(lines, ["method", "lambda_max (converged?)", "predicted rate (lr-prior)",
                                        "tuned (chosen) rate", "on the grid's edge"], tablefmt=fmt,
                                disable_numparse=True)
                     + f"\n\n{line}")
    return "\n\n".join(parts)


def render_edges(rows: list[dict], fmt: str = "github") -> str:
    """How often the chosen rate was the lowest or highest of its grid, per suite and grid kind
    (``initbench.tuning_grid.edge_report``)."""
    lines = [[r["suite"], r["kind"], r["selections"], r["lowest"], r["highest"],
              f"{r['lowest'] + r['highest']}/{r['selections']}"
              + (f" ({(r['lowest'] + r['highest']) / r['selections']:.0%})" if r["selections"] else ""),
              r["not_from_grid"]] for r in rows]
    return ("Chosen learning rate on the edge of its tuning grid, per grid kind (selection files; on the edge, the "
            "best rate may lie outside the grid):\n\n"
            + tabulate(lines, ["suite", "grid", "selections", "lowest rate", "highest rate", "on the edge",
                               "not from the grid (every trial failed)"], tablefmt=fmt, disable_numparse=True))


def _cost_table(rows: list[dict], fmt: str) -> str:
    lines = [[r["method"], _num(r["trainable_params"], ",.0f"), _num(r["init_seconds"], ".3f"),
              _num(r["train_seconds"], ".2f"), _num(r["train_tokens_per_second"], ",.0f"), _num(r["mfu"], ".1%"),
              _num((r["peak_memory_bytes"] or 0) / 2**20, ",.0f"),
              _num(r["train_tokens"], ",.0f"), _num(r["calibration_examples"], ",.0f"), _num(r["flops"], ".3g"),
              r["tuning_trials"], _num(r["tuning_seconds"], ".1f"), _num(r["tuning_flops"], ".3g"),
              _num(r["total_flops"], ".3g")] for r in rows]
    return ("Cost (mean per final run; peak memory: max; tuning: sum over the method's trials; total FLOPs: finals + "
            "tuning; MFU: initbench.throughput, GPU only):\n\n" + tabulate(lines, ["method", "trainable params", "init s",
                                              "train s", "train tok/s", "MFU", "peak MiB",
                                              "train tokens", "calib examples", "FLOPs/run", "trials", "tuning s",
                                              "tuning FLOPs", "total FLOPs"], tablefmt=fmt))
