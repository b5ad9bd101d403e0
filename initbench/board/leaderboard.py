"""The leaderboard's statistics: per-task cells, the normalized aggregate, significance, convergence, cost.

``build(table)`` returns a typed :class:`initbench.board.board.Board`; ``initbench.board.leaderboard_text``
renders it as text, ``initbench.board.leaderboard_page`` as a page.  Everything starts from
``aggregate`` (a pyarrow group-by of the final rows) and from ``initbench.board.stats``.  The
choices, also printed under the tables:

* **Per task** (one cell per method, task and metric, over the evaluation seeds): mean,
  sample std (ddof=1) and a 95% **percentile bootstrap** interval of the mean
  (``BOOTSTRAP_REPS`` = 2,000 multinomial resamples of the seeds, seeded, so a rebuilt
  table prints the same numbers; the same estimator as ``stats.bootstrap_ci(method=
  "percentile")``, vectorized over cells: ``initbench.board.mean_quantiles``).  n < 2: no interval.
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
  resampled within each task; every method's at once: ``stats.stratified_bootstrap_iqm_cis``).  Without a ``base`` run the raw primary metric is used.  A task
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
* **Curvature at init** (where ``initbench curvature`` measured it; ``initbench.board.curvature_board``):
  per task, lambda_max beside the rate lr-prior predicts from it, the tuned rate and whether that
  was the lowest or highest rate tried, with the fit of log(tuned rate) on log(1 / lambda_max)
  (``lr_prior.fit``: slope, R^2, r with its Fisher-z interval); and, from a results folder's
  selection files, how often the chosen rate sat on the edge of its grid, per grid kind.
* **Cost** per run (mean over final runs): trainable parameters, init and train seconds,
  peak memory, training tokens, calibration examples, FLOPs; tuning cost is the sum over
  the method's trials (count, seconds, FLOPs), and the total adds it to the finals'.
* **Resolution** (``initbench.board.resolution``): per task, the seed s.d. of the primary metric
  pooled over the trained methods and the minimum detectable difference at the board's seeds.
* **Tuning-seed check** (``initbench.board.tuning_seed``): how far the tuning seeds' finals sit
  above the other seeds' under each protocol; under ``tuned`` the rate was chosen on those very
  trainings, so a gap above the ``fixed`` one is selection bias in the tuned means.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from initbench.board import stats
from initbench.board.board import (
    AggregateRow,
    Board,
    Cell,
    ConvergenceRow,
    CostRow,
    DiagnosticsRow,
    Failure,
    ForgettingRow,
    Normalization,
    Pairwise,
    ProtocolBlock,
    SuiteBoard,
    TuningRow,
    make_cells,
)
from initbench.board.mean_quantiles import quantiles_of_means
from initbench.selection.counted import rows_where

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
    table = table.select([c for c in KEYS + ["seed", "value", "status", "phase"] if c in table.column_names])
    keep = pc.and_(pc.equal(table["status"], "ok"), pc.is_valid(table["metric"]))
    if "phase" in table.schema.names:
        keep = pc.and_(keep, pc.equal(table["phase"], "final"))
    ok = rows_where(table, keep)
    specs = [("value", "mean"), ("value", "stddev", pc.VarianceOptions(ddof=1)), ("seed", "list")]
    if ci:
        specs.append(("value", "list"))
    grouped = _group_by(ok, KEYS, specs)
    grouped = grouped.rename_columns(KEYS + ["mean", "std", "seed_list"] + (["values"] if ci else []))
    grouped = grouped.set_column(grouped.column_names.index("seed_list"), "seeds", _distinct(grouped["seed_list"]))
    if ci:
        low, high = bootstrap_cells(grouped["values"])
        grouped = (
            grouped.drop_columns(["values"])
            .append_column("ci_low", pa.array(low))
            .append_column("ci_high", pa.array(high))
        )
    return _sorted_by(grouped, ["suite", "suite_hash", "task", "metric", "method"])


def _group_by(table: pa.Table, keys: list[str], specs: list[tuple]) -> pa.Table:
    """``table.group_by(keys).aggregate(specs)`` (the key columns first): keys that hold one value in
    every row (a board's suite and spec hash) are left out of the hashing and put back as constant
    columns, the same groups in the same order, cheaper."""
    constant = [k for k in keys if table.num_rows and _one_value(table[k])]
    if not constant:
        return table.group_by(keys, use_threads=False).aggregate(specs)
    varying = [k for k in keys if k not in constant]
    grouped = table.group_by(varying, use_threads=False).aggregate(specs)
    values = grouped.column_names[len(varying) :]
    columns = [pa.repeat(table[k][0], grouped.num_rows) if k in constant else grouped[k] for k in keys]
    fields = [table.schema.field(k) if k in constant else grouped.schema.field(k) for k in keys]
    schema = pa.schema(fields + [grouped.schema.field(c) for c in values])
    return pa.table(columns + [grouped[c] for c in values], schema=schema)


def _sorted_by(table: pa.Table, keys: list[str]) -> pa.Table:
    """``table.sort_by([(k, "ascending") for k in keys])``, the same rows in the same order: a stable
    sort on each key's rank among its distinct values (ranked by Arrow's own sort of them), faster than
    comparing the values row against row.  Keys with nulls: Arrow's ``sort_by`` itself."""
    if any(table[k].null_count for k in keys):
        return table.sort_by([(k, "ascending") for k in keys])
    ranks = []
    for k in reversed(keys):  # np.lexsort sorts by the last key first
        encoded = pc.dictionary_encode(table[k]).combine_chunks()
        rank = np.empty(len(encoded.dictionary), np.int64)
        rank[pc.sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(rank))
        ranks.append(rank[encoded.indices.to_numpy()])
    return table.take(np.lexsort(ranks)) if ranks else table


def bootstrap_cells(
    values: pa.ChunkedArray | pa.Array,
    reps: int = BOOTSTRAP_REPS,
    confidence: float = CONFIDENCE,
    seed: int = stats.DEFAULT_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of the mean of every list in ``values`` (one per cell).

    Cells with the same number of values n share one draw of ``reps`` multinomial weight
    vectors (seeded), so the whole table costs a few matrix products: each cell's interval
    is exactly a percentile bootstrap of its own mean (``initbench.board.mean_quantiles``).  n < 2: NaN;
    a constant cell: (c, c) (``stats.bootstrap_ci``'s conventions)."""
    low = np.full(len(values), math.nan)
    high = np.full(len(values), math.nan)
    alpha = 1.0 - confidence
    for n, cells, x in _sorted_lists(values, float):  # x: (cells, n), each row sorted (row order is moot)
        if n < 2:
            continue
        rng = np.random.default_rng([seed, int(n)])
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=reps)  # (reps, n): resample r takes value i c[r, i] times
        low[cells], high[cells] = quantiles_of_means(x, counts, np.array([alpha / 2, 1 - alpha / 2]))
        constant = np.all(x == x[:, :1], axis=1)
        low[cells[constant]] = high[cells[constant]] = x[constant, 0]
    return low, high


def _sorted_lists(lists: pa.ChunkedArray | pa.Array, dtype: type) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """The lists of ``lists`` grouped by length n: (n, their positions, an array (lists, n) of their
    values, each row sorted)."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(int)
    flat = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(dtype)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    out = []
    for n in np.unique(lengths):
        rows = np.flatnonzero(lengths == n)
        out.append((int(n), rows, np.sort(flat[offsets[rows][:, None] + np.arange(n)], axis=1)))
    return out


def _distinct(lists: pa.ChunkedArray) -> pa.Array:
    """How many distinct values each list holds, nulls left out (pyarrow's ``count_distinct`` of a
    group's values, counted here from its list: cheaper beside the other aggregates)."""
    if pc.list_flatten(lists).null_count:
        return pa.array([len(set(v) - {None}) for v in lists.to_pylist()], pa.int64())
    counts = np.zeros(len(lists), np.int64)
    for n, rows, x in _sorted_lists(lists, np.int64):
        counts[rows] = 1 + np.count_nonzero(x[:, 1:] != x[:, :-1], axis=1) if n else 0
    return pa.array(counts)


def failures(table: pa.Table) -> list[Failure]:
    """Runs that did not finish ok, one per run, with their reason."""
    bad = table.filter(pc.not_equal(table["status"], "ok"))
    rows = (
        bad.select(["suite", "method", "task", "seed", "status", "error"])
        .group_by(["suite", "method", "task", "seed", "status", "error"])
        .aggregate([])
    )
    return [Failure(**r) for r in rows.to_pylist()]


# --------------------------------------------------------------------------- the whole board


def _primary(recorded: str | None, lm_eval_task: str | None, metrics: list[str]) -> tuple[str, bool]:
    """A task's primary metric and whether higher is better: the one its rows record
    (``primary_metric``, schema 6: the suite's choice or the task's default), else the lm-eval
    task's default (``evaluation.primary_metric``: first metric, first filter) for older files,
    else the first recorded metric in name order (synthetic tables, a task YAML not installed)."""
    keys: dict[str, bool] = {}
    if lm_eval_task:
        try:
            from initbench.inputs.evaluation import metric_keys

            keys = metric_keys(lm_eval_task)
        except Exception:  # a task YAML that is not installed here
            keys = {}
    for candidate in (recorded, next(iter(keys), None)):
        if candidate and candidate in metrics:
            return candidate, keys.get(candidate, True)
    return sorted(metrics)[0], True


#: every column ``build`` reads; selected first, so that each filter copies only these
BOARD_COLUMNS = KEYS + [
    "run_id",
    "seed",
    "value",
    "status",
    "error",
    "protocol",
    "phase",
    "learning_rate",
    "selected_lr",
    "lm_eval_task",
    "primary_metric",
    "base_weights_modified",
    "forgetting_kl",
    "forgetting_set",
]


def build(table: pa.Table, curves: pa.Table | None = None, curvature: pa.Table | None = None) -> Board:
    """Every statistic of the leaderboard (see the module docstring): a suite per (suite, spec hash)
    with a block per protocol present (``tuned`` first), convergence, cost and tuning, and
    curvature at init where ``curvature`` (``initbench.run.curvature_table``) measured it."""
    from initbench.board.curvature_board import curvature_cells, curvature_fits
    from initbench.board.resolution import resolution
    from initbench.board.tuning_seed import tuning_seed_check
    from initbench.selection.counted import final_rows, has_tuned

    if "protocol" not in table.schema.names:
        from initbench.store.results import upgrade

        table = upgrade(table)
    wanted = set(BOARD_COLUMNS + COST_COLUMNS + REUSE_COLUMNS + DIAGNOSTIC_COLUMNS)
    table = table.select([c for c in table.column_names if c in wanted])
    protocols = (["tuned"] if has_tuned(table) else []) + ["fixed"]
    suites = []
    suite_keys = _suite_keys(table)
    for suite, suite_hash in suite_keys:
        st = (
            table
            if len(suite_keys) == 1
            else table.filter(pc.and_(pc.equal(table["suite"], suite), pc.equal(table["suite_hash"], suite_hash)))
        )
        blocks: dict[str, ProtocolBlock] = {}
        views: dict[str, pa.Table] = {}
        for protocol in protocols:
            views[protocol] = view = final_rows(st, protocol)
            table_of_cells = aggregate(view)
            cells = make_cells(_pylist(table_of_cells[f.name]) for f in fields(Cell))
            if cells:
                blocks[protocol] = _across_tasks(view, cells)
        main = next(iter(blocks), None)
        if main is None:
            suites.append(SuiteBoard(suite, suite_hash, blocks))
            continue
        view = views[main]
        curvature_rows = curvature_cells(st, curvature)
        suites.append(
            SuiteBoard(
                suite,
                suite_hash,
                blocks,
                main=main,
                run_ids=sorted(pc.unique(view["run_id"]).to_pylist()),
                convergence=_convergence(view, curves),
                cost=_cost(view, st),
                diagnostics=_diagnostics(view),
                forgetting=_forgetting(view),
                learning_rates=_learning_rates(view),
                tuning=_tuning(st, blocks[main].primary),
                curvature=curvature_rows,
                curvature_fits=curvature_fits(curvature_rows),
                resolution=resolution(blocks[main].cells, blocks[main].primary),
                tuning_seed=tuning_seed_check(st, views, blocks[main].primary),
            )
        )
    return Board(suites, failures(table))


def _pylist(column: pa.ChunkedArray) -> list:
    """``column.to_pylist()``; a string column without nulls through its dictionary, each distinct
    value made once and shared (a board's method, task and metric columns repeat a few values
    100,000s of times)."""
    if not pa.types.is_string(column.type) or column.null_count:
        return column.to_pylist()
    encoded = pc.dictionary_encode(column).combine_chunks()
    return np.array(encoded.dictionary.to_pylist(), dtype=object)[encoded.indices.to_numpy()].tolist()


def _suite_keys(table: pa.Table) -> list[tuple[str, str]]:
    """The (suite, spec hash) pairs of ``table``, sorted."""
    if table.num_rows and all(_one_value(table[c]) for c in ("suite", "suite_hash")):
        return [(table["suite"][0].as_py(), table["suite_hash"][0].as_py())]
    pairs = table.group_by(["suite", "suite_hash"], use_threads=False).aggregate([])
    return sorted(zip(pairs["suite"].to_pylist(), pairs["suite_hash"].to_pylist()))


def _one_value(column: pa.ChunkedArray) -> bool:
    """Whether every row of ``column`` holds its first row's value (no null)."""
    return column.null_count == 0 and pc.all(pc.equal(column, column[0])).as_py() is True


@dataclass(slots=True)
class _PrimaryScores:
    """A protocol's values of each task's primary metric (ok runs), per method in order of first
    appearance (task by task, in ``primary``'s order, each in row order): per task the mean over
    seeds (NaN: no run), and the (seeds x tasks) matrix on the seeds it ran on every task (None: none)."""

    methods: list[str]
    means: np.ndarray  # (methods, tasks)
    matrices: list[tuple[np.ndarray, list[int]] | None]


def _primary_scores(view: pa.Table, primary: dict[str, tuple[str, bool]]) -> _PrimaryScores:
    """The primary metric's values of ``view`` (``_PrimaryScores``).  Where a (method, task, seed) has
    one value (each run one row), laid out with numpy; else (a run in two rows: the last counts) from
    a dict per method, task and seed, filled in that order.  The same numbers either way: the same
    values in the same order go into each mean (``np.mean`` of a row is that of the row alone)."""
    ok = view.select(["method", "task", "metric", "seed", "value", "status"])
    tasks = pa.array(list(primary), pa.string())
    metric_of_row = pc.take(pa.array([m for m, _ in primary.values()], pa.string()), pc.index_in(ok["task"], tasks))
    ok = ok.filter(pc.and_(pc.equal(ok["status"], "ok"), pc.equal(ok["metric"], metric_of_row)))
    if not any(ok[c].null_count for c in ("method", "seed", "value")):
        scores = _laid_out(ok, tasks)
        if scores is not None:
            return scores
    return _filled_in(ok, list(primary))


def _filled_in(ok: pa.Table, primary: list[str]) -> _PrimaryScores:
    """``_primary_scores`` from a dict method -> task -> seed -> value, filled task by task in row order."""
    per: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for task in primary:
        rows = ok.filter(pc.equal(ok["task"], task))
        for m, s, v in zip(rows["method"].to_pylist(), rows["seed"].to_pylist(), rows["value"].to_pylist()):
            per[m][task][s] = v
    means = np.array(
        [[np.mean(list(per[m][t].values())) if per[m].get(t) else np.nan for t in primary] for m in per]
    ).reshape(len(per), len(primary))
    matrices: list[tuple[np.ndarray, list[int]] | None] = []
    for m in per:
        seeds = sorted(set.intersection(*[set(per[m].get(t, {})) for t in primary]))
        matrices.append(
            (np.array([[per[m][t][s] for t in primary] for s in seeds], dtype=float), seeds) if seeds else None
        )
    return _PrimaryScores(list(per), means, matrices)


def _laid_out(ok: pa.Table, tasks: pa.Array) -> _PrimaryScores | None:
    """``_primary_scores`` of rows without nulls, with numpy; None where a (method, task, seed) has
    two rows."""
    task = pc.index_in(ok["task"], tasks).to_numpy(zero_copy_only=False)
    by_task = np.argsort(task, kind="stable")  # task by task, each in row order
    task = task[by_task]
    encoded = pc.dictionary_encode(ok["method"]).combine_chunks()
    code = encoded.indices.to_numpy(zero_copy_only=False)[by_task]
    codes, first = np.unique(code, return_index=True)
    order = codes[np.argsort(first, kind="stable")]  # method codes by first appearance
    position = np.empty(len(encoded.dictionary), np.int64)
    position[order] = np.arange(len(order))
    method = position[code]
    seed_values, seed = np.unique(ok["seed"].to_numpy(zero_copy_only=False)[by_task], return_inverse=True)
    value = ok["value"].to_numpy(zero_copy_only=False)[by_task]
    n_methods, n_tasks, n_seeds = len(order), len(tasks), len(seed_values)
    cell = method * n_tasks + task
    if len(np.unique(cell * n_seeds + seed)) < len(cell):
        return None  # a run in two rows
    grid = np.full((n_methods, n_tasks, n_seeds), np.nan)
    grid[method, task, seed] = value
    ran = np.zeros((n_methods, n_tasks, n_seeds), bool)
    ran[method, task, seed] = True
    means = np.full(n_methods * n_tasks, np.nan)
    grouped = np.argsort(cell, kind="stable")  # each (method, task)'s values together, in row order
    cells, starts, sizes = np.unique(cell[grouped], return_index=True, return_counts=True)
    for size in np.unique(sizes):
        which = sizes == size
        rows = grouped[starts[which][:, None] + np.arange(size)]
        means[cells[which]] = np.mean(value[rows], axis=1)
    matrices: list[tuple[np.ndarray, list[int]] | None] = []
    for m in range(n_methods):
        common = ran[m].all(axis=0)
        matrices.append(
            (np.ascontiguousarray(grid[m][:, common].T), seed_values[common].tolist()) if common.any() else None
        )
    names = encoded.dictionary.to_pylist()
    return _PrimaryScores([names[c] for c in order], means.reshape(n_methods, n_tasks), matrices)


def _last_per_task(view: pa.Table) -> tuple[dict[str, str | None], dict[str, str]]:
    """task -> the lm-eval task on its last row, and task -> the primary metric on its last row that
    records one (set and not empty): as ``dict(zip(tasks, values))`` keeps the last."""
    recorded = view["primary_metric"]
    recorded = pc.if_else(pc.equal(recorded, ""), pa.scalar(None, recorded.type), recorded)
    rows = pa.table({"task": view["task"], "lm_eval_task": view["lm_eval_task"], "recorded": recorded})
    last = rows.group_by(["task"], use_threads=False).aggregate(
        [("lm_eval_task", "last", pc.ScalarAggregateOptions(skip_nulls=False)), ("recorded", "last")]
    )
    tasks = last["task"].to_pylist()
    return (
        dict(zip(tasks, last["lm_eval_task_last"].to_pylist())),
        {t: p for t, p in zip(tasks, last["recorded_last"].to_pylist()) if p is not None},
    )


def _across_tasks(view: pa.Table, cells: list[Cell]) -> ProtocolBlock:
    """A protocol's block: its cells, each task's primary metric, the normalization, the aggregate
    across tasks and the comparison with ``lora``."""
    metrics: dict[str, set[str]] = defaultdict(set)
    reference: dict[str, bool] = {}
    for c in cells:
        metrics[c.task].add(c.metric)
        reference[c.method] = c.is_reference
    tasks = sorted(metrics)
    lm_tasks, recorded = _last_per_task(view)
    primary = {t: _primary(recorded.get(t), lm_tasks.get(t), sorted(metrics[t])) for t in tasks}
    scores = _primary_scores(view, primary)
    higher = np.array([primary[t][1] for t in tasks])
    normalized = FLOOR_METHOD in scores.methods
    if normalized:
        floor = scores.means[scores.methods.index(FLOOR_METHOD)]
        candidates = {m: scores.means[i][None, :] for i, m in enumerate(scores.methods) if m != FLOOR_METHOD}
        ceiling = stats.best_reference(candidates, exclude=(), higher_is_better=higher) if candidates else floor
        ceiling_from = [next((m for m, v in candidates.items() if v[0, i] == c), "base") for i, c in enumerate(ceiling)]
        # a ceiling at or below the floor (above it, for lower-is-better) would turn the scale over
        # or divide by zero: such a task is not normalizable and is left out of the aggregate
        with np.errstate(invalid="ignore"):
            unusable = ~(np.where(higher, ceiling - floor, floor - ceiling) > 0)
        not_normalizable = [t for t, bad in zip(tasks, unusable) if bad]
        ceiling = np.where(unusable, np.nan, ceiling)
    matrices: dict[str, tuple[np.ndarray, list[int]]] = {}
    for method, scored in zip(scores.methods, scores.matrices):
        if scored is None:
            continue
        m, seeds = scored
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
    intervals = stats.stratified_bootstrap_iqm_cis(
        [m for m, _ in matrices.values()], reps=IQM_REPS, confidence=CONFIDENCE
    )  # each as stratified_bootstrap_ci
    for (method, (m, seeds)), (low, high) in zip(matrices.items(), intervals):
        aggregate_rows.append(
            AggregateRow(
                method,
                reference.get(method, False),
                float(stats.aggregate_iqm(m)),
                float(low),
                float(high),
                float(stats.aggregate_mean(m)),
                len(seeds),
                m.shape[1],
            )
        )
    aggregate_rows.sort(key=lambda r: -r.iqm)
    return ProtocolBlock(
        cells=cells,
        tasks=tasks,
        primary={t: primary[t][0] for t in tasks},
        normalization=(
            Normalization(
                floor=FLOOR_METHOD,
                ceiling={t: c for t, c in zip(tasks, ceiling_from) if t not in not_normalizable},
                floor_values=dict(zip(tasks, floor.tolist())),
                ceiling_values={t: c for t, c in zip(tasks, ceiling.tolist()) if t not in not_normalizable},
                not_normalizable=not_normalizable,
            )
            if normalized
            else None
        ),
        aggregate=aggregate_rows,
        pairwise=_pairwise(matrices),
    )


def _pairwise(matrices: dict[str, tuple[np.ndarray, list[int]]]) -> list[Pairwise]:
    """Every method against ``lora`` on the same tasks: probability of improvement with its interval,
    Wilcoxon signed-rank paired by (seed, task), Holm-adjusted over the methods."""
    if REFERENCE_METHOD not in matrices:
        return []
    ref, ref_seeds = matrices[REFERENCE_METHOD]
    others = [
        (method, m, seeds)
        for method, (m, seeds) in sorted(matrices.items())
        if method != REFERENCE_METHOD and m.shape[1] == ref.shape[1]
    ]
    intervals = stats.probability_of_improvement_cis(
        [m for _, m, _ in others], ref, reps=POI_REPS, confidence=CONFIDENCE
    )  # each as probability_of_improvement_ci
    pairs = []  # each method and lora on their common seeds
    for _, m, seeds in others:
        common = sorted(set(seeds) & set(ref_seeds))
        pairs.append((m[[seeds.index(s) for s in common]], ref[[ref_seeds.index(s) for s in common]]))
    rows = [
        (method, float(stats.probability_of_improvement(m, ref)), float(poi_low), float(poi_high), test)
        for (method, m, _), (poi_low, poi_high), test in zip(others, intervals, stats.paired_tests(pairs))
    ]
    p_values = [test.wilcoxon_pvalue for *_, test in rows]
    adjusted = stats.holm(p_values)
    marks = stats.significant(p_values, ALPHA)
    return [
        Pairwise(
            method,
            poi,
            low,
            high,
            test.n_pairs,
            test.mean_diff,
            test.wilcoxon_pvalue,
            test.t_pvalue,
            test.min_wilcoxon_pvalue,
            float(adj),
            bool(mark),
        )
        for (method, poi, low, high, test), adj, mark in zip(rows, adjusted, marks)
    ]


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


def _convergence(view: pa.Table, curves: pa.Table | None) -> list[ConvergenceRow]:
    if curves is None or curves.num_rows == 0:
        return []
    ok = view.filter(pc.equal(view["status"], "ok")).select(["method", "task", "seed", "run_id"])
    runs = sorted(tuple(r.values()) for r in ok.group_by(ok.column_names, use_threads=False).aggregate([]).to_pylist())
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
        row = rows.setdefault(
            (method, task),
            {"method": method, "task": task, "auc": [], "reached": [], "n": 0, "target": target.get(task)},
        )
        row["n"] += 1
        row["auc"].append(stats.auc(losses, steps))
        if task in target:
            hit = stats.steps_to_reach(losses, steps, target[task], alpha=CONVERGENCE_EMA)
            if hit is not None:
                row["reached"].append(hit)
    low, high = bootstrap_cells(pa.array([row["auc"] for row in rows.values()], pa.list_(pa.float64())))
    out = [
        ConvergenceRow(
            row["method"],
            row["task"],
            float(np.mean(row["auc"])),
            float(lo),
            float(hi),
            float(np.mean(row["reached"])) if row["reached"] else None,
            len(row["reached"]),
            row["n"],
            row["target"],
        )
        for row, lo, hi in zip(rows.values(), low, high)
    ]
    return sorted(out, key=lambda r: (r.task, r.method))


def _per_run(table: pa.Table, columns: list[str] | None = None) -> pa.Table:
    """One row per run, in order of first appearance: ``run_id``, then per column (and ``method``)
    the first value it records in the run's rows, as pyarrow's ``first`` aggregate gives it (nulls
    skipped).  A column without nulls is taken at each run's first row; a column all null is null;
    only the others go through ``first`` (hashing a million run ids once, not once per column)."""
    columns = (COST_COLUMNS if columns is None else columns) + ["method"]
    partly_null = [c for c in columns if 0 < table[c].null_count < table.num_rows]
    rows = pa.table(
        {"run_id": table["run_id"], "row": pa.array(np.arange(table.num_rows))} | {c: table[c] for c in partly_null}
    )
    runs = rows.group_by(["run_id"], use_threads=False).aggregate(
        [("row", "min")] + [(c, "first") for c in partly_null]
    )
    first_row = runs["row_min"]
    out = {"run_id": runs["run_id"]}
    for c in columns:
        if c in partly_null:
            out[c] = runs[f"{c}_first"]
        elif table[c].null_count:
            out[c] = pa.nulls(runs.num_rows, table[c].type)
        else:
            out[c] = table[c].take(first_row)
    return pa.table(out)


DIAGNOSTIC_COLUMNS = ["init_update_erank", "final_update_erank", "relative_weight_change"]


def _diagnostics(view: pa.Table) -> list[DiagnosticsRow]:
    """Per method, the rich/lazy diagnostics (``initbench.run.diagnostics``) averaged over the runs that
    recorded them, beside the trainable parameters; empty when no run switched them on."""
    if not all(c in view.schema.names for c in DIAGNOSTIC_COLUMNS) or not pc.count(view["final_update_erank"]).as_py():
        return []
    runs = _per_run(view, ["trainable_params", "base_weights_modified", *DIAGNOSTIC_COLUMNS])
    runs = runs.filter(pc.is_valid(runs["final_update_erank"]))
    if runs.num_rows == 0:
        return []
    runs = runs.append_column("modified", pc.cast(runs["base_weights_modified"], pa.int64()))
    agg = runs.group_by(["method"], use_threads=False).aggregate(
        [("run_id", "count"), ("trainable_params", "mean"), ("modified", "max")]
        + [(c, "mean") for c in DIAGNOSTIC_COLUMNS]
    )
    return sorted(
        (
            DiagnosticsRow(
                r["method"],
                r["run_id_count"],
                r["trainable_params_mean"],
                bool(r["modified_max"]),
                *(r[f"{c}_mean"] for c in DIAGNOSTIC_COLUMNS),
            )
            for r in agg.to_pylist()
        ),
        key=lambda r: r.method,
    )


def _forgetting(view: pa.Table) -> list[ForgettingRow]:
    """Per (method, task), the mean forgetting (``initbench.run.forgetting``) over the ok final runs that
    recorded it, with a 95% percentile-bootstrap interval over seeds and the held set's name; empty
    when no run recorded it (older files, or offline without the held text)."""
    if "forgetting_kl" not in view.schema.names or not pc.count(view["forgetting_kl"]).as_py():
        return []
    runs = _per_run(view.filter(pc.equal(view["status"], "ok")), ["task", "forgetting_kl", "forgetting_set"])
    runs = runs.filter(pc.is_valid(runs["forgetting_kl"]))
    if runs.num_rows == 0:
        return []
    cells = runs.group_by(["method", "task", "forgetting_set"], use_threads=False).aggregate(
        [("forgetting_kl", "list"), ("forgetting_kl", "mean")]
    )
    low, high = bootstrap_cells(cells["forgetting_kl_list"])
    return sorted(
        (
            ForgettingRow(
                r["method"],
                r["task"],
                r["forgetting_set"],
                len(r["forgetting_kl_list"]),
                r["forgetting_kl_mean"],
                float(lo),
                float(hi),
            )
            for r, lo, hi in zip(cells.to_pylist(), low, high)
        ),
        key=lambda r: (r.task, r.method),
    )


def forgetting_by_method(rows: list[ForgettingRow]) -> dict[str, float]:
    """method -> the mean over its tasks of the per-task mean forgetting (``_forgetting``'s rows)."""
    by_method: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by_method[r.method].append(r.mean)
    return {m: sum(v) / len(v) for m, v in sorted(by_method.items())}


def _learning_rates(view: pa.Table) -> dict[str, dict[str, list[float]]]:
    """method -> task -> the learning rates its ok final runs trained at (under the tuned protocol, the
    rate tuning chose; under the fixed one, the suite's); methods that do not train are left out."""
    ok = view.filter(pc.and_(pc.equal(view["status"], "ok"), pc.is_valid(view["learning_rate"])))
    trained = ok.group_by(["method", "task", "learning_rate"], use_threads=False).aggregate([])
    rates: dict[str, dict[str, set[float]]] = defaultdict(lambda: defaultdict(set))
    for method, task, lr in zip(*(trained[c].to_pylist() for c in ("method", "task", "learning_rate"))):
        rates[method][task].add(lr)
    return {m: {t: sorted(v) for t, v in sorted(by_task.items())} for m, by_task in sorted(rates.items())}


REUSE_COLUMNS = ["init_reused", "train_reused"]  # the run restored its init / training from an earlier run
COST_COLUMNS = [
    "trainable_params",
    "init_seconds",
    "train_seconds",
    "wall_seconds",
    "peak_memory_bytes",
    "train_tokens",
    "calibration_examples",
    "flops",
    "train_tokens_per_second",
    "mfu",
]
# Timings are medians over a method's runs: one run slowed by a busy or paused machine moves a mean,
# not a median.  Peak memory: the max.  The rest (parameters, tokens, examples, FLOPs): means.
MEDIAN_COST_COLUMNS = ["init_seconds", "train_seconds", "wall_seconds", "train_tokens_per_second", "mfu"]
MEAN_COST_COLUMNS = [c for c in COST_COLUMNS if c not in MEDIAN_COST_COLUMNS and c != "peak_memory_bytes"]


def _cost(view: pa.Table, suite_table: pa.Table) -> list[CostRow]:
    """Per method, the cost of a run (``MEDIAN_COST_COLUMNS``: the median over its runs; the other columns:
    the mean, peak memory the max); ``wall_seconds`` over the runs that computed their init and
    training (a run that restored them, ``initbench.run.init_cache`` / ``train_cache``, took less wall time
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
        [(c, "mean") for c in MEAN_COST_COLUMNS]
        + [(c, "list") for c in MEDIAN_COST_COLUMNS]
        + [("peak_memory_bytes", "max"), ("flops", "sum"), ("run_id", "count")]
    )
    trials = suite_table.filter(pc.equal(suite_table["phase"], "trial"))
    tuning: dict[str, dict] = {}
    if trials.num_rows:
        tr = (
            _per_run(trials)
            .group_by(["method"], use_threads=False)
            .aggregate([("run_id", "count"), ("wall_seconds", "sum"), ("flops", "sum")])
        )
        tuning = {r["method"]: r for r in tr.to_pylist()}
    out = []
    for r in agg.to_pylist():
        t = tuning.get(r["method"], {})
        out.append(
            CostRow(
                method=r["method"],
                runs=r["run_id_count"],
                **{c: r[f"{c}_mean"] for c in MEAN_COST_COLUMNS},
                **{c: _median(r[f"{c}_list"]) for c in MEDIAN_COST_COLUMNS},
                peak_memory_bytes=r["peak_memory_bytes_max"],
                tuning_trials=t.get("run_id_count", 0),
                tuning_seconds=t.get("wall_seconds_sum") or 0.0,
                tuning_flops=t.get("flops_sum") or 0.0,
                total_flops=(r["flops_sum"] or 0.0) + (t.get("flops_sum") or 0.0),
            )
        )
    return sorted(out, key=lambda r: r.method)


def _median(values: list[float | None]) -> float | None:
    """The median of the values recorded (None where none is; NaN where one is NaN)."""
    recorded = [v for v in values if v is not None]
    return float(np.median(recorded)) if recorded else None


def _tuning(suite_table: pa.Table, primary: dict[str, str]) -> list[TuningRow]:
    """Per (method, task): the validation mean of the primary metric per trial rate, and the chosen rate."""
    trials = suite_table.filter(pc.and_(pc.equal(suite_table["phase"], "trial"), pc.equal(suite_table["status"], "ok")))
    if trials.num_rows == 0:
        return []
    chosen = suite_table.filter(
        pc.and_(pc.equal(suite_table["protocol"], "tuned"), pc.equal(suite_table["phase"], "final"))
    )
    picked = {
        (m, t): lr
        for m, t, lr in zip(chosen["method"].to_pylist(), chosen["task"].to_pylist(), chosen["selected_lr"].to_pylist())
    }
    rows: dict[tuple[str, str, float], list[float]] = defaultdict(list)
    for m, t, metric, lr, v in zip(
        trials["method"].to_pylist(),
        trials["task"].to_pylist(),
        trials["metric"].to_pylist(),
        trials["learning_rate"].to_pylist(),
        trials["value"].to_pylist(),
    ):
        if metric == primary.get(t):
            rows[(m, t, lr)].append(v)
    return [
        TuningRow(m, t, lr, primary.get(t), float(np.mean(v)), len(v), picked.get((m, t)) == lr)
        for (m, t, lr), v in sorted(rows.items())
    ]


def grid_edges(rows: list[TuningRow]) -> tuple[set[tuple[str, str]], int]:
    """The (method, task) pairs whose tuning chose the lowest or highest of several rates tried (the
    best rate may lie outside the grid), and how many (method, task) pairs tuning chose a rate for."""
    tried: dict[tuple[str, str], set[float]] = defaultdict(set)
    chosen: dict[tuple[str, str], float] = {}
    for r in rows:
        tried[(r.method, r.task)].add(r.lr)
        if r.selected:
            chosen[(r.method, r.task)] = r.lr
    edges = {key for key, lr in chosen.items() if len(tried[key]) > 1 and lr in (min(tried[key]), max(tried[key]))}
    return edges, len(chosen)
