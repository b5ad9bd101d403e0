"""Issue 15, items 3 and 6: the typed board, and its fast statistics held to plain loops.

The leaderboard computes its intervals faster than one resample at a time
(``mean_quantiles.quantiles_of_means``, ``stats._iqm_intervals``, ``stats._poi_intervals``); the published
numbers must not move, so each is compared here with the straightforward computation, bit for bit,
and a small board's rendered tables with numbers computed here from the values themselves.
"""

from __future__ import annotations

import ast
import json
import statistics
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from _trees import fixed_tree, synthetic_row, tuned_tree

from initbench.board import leaderboard, mean_quantiles, stats
from initbench.board.board import Board, Cell, Pairwise
from initbench.board.leaderboard_text import render, render_board
from initbench.store.results import RESULTS_SCHEMA

Q = np.array([0.025, 0.975])


def _rows(kind: str, count: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted rows of ``n`` values: the shapes the tails have to cope with."""
    if kind == "normal":
        x = rng.normal(0.5, 0.05, (count, n))
    elif kind == "quarters":  # heavy ties among the means
        x = rng.integers(0, 5, (count, n)) / 4
    elif kind == "binary":
        x = rng.integers(0, 2, (count, n)).astype(float)
    elif kind == "outliers":
        x = rng.normal(0.5, 0.01, (count, n))
        x[::2, 0], x[1::2, 0] = 5.0, -5.0
    elif kind == "constant":
        x = np.full((count, n), 0.3)
    else:  # "nan": np.quantile gives NaN for those rows
        x = rng.uniform(0, 1, (count, n))
        x[::7, 0] = np.nan
    return np.sort(x, axis=1)


@pytest.mark.parametrize("kind", ["normal", "quarters", "binary", "outliers", "constant", "nan"])
@pytest.mark.parametrize("proxy_order", [True, False])
def test_quantiles_of_means_are_numpy_quantiles_of_the_chunk_products(kind, proxy_order, monkeypatch):
    """Per chunk of rows, ``np.quantile(x @ weights, q, axis=1)``: the computation the published
    intervals were first made with; also when block products in another column order are refused."""
    monkeypatch.setattr(mean_quantiles, "_CHUNK_ELEMENTS", 2_000 * 300)  # several chunks of 300 rows
    monkeypatch.setattr(mean_quantiles, "_BLOCK", 64)
    monkeypatch.setattr(mean_quantiles, "_PROXY_ROWS", 128)  # two proxy orders per chunk, rows reordered
    if not proxy_order:
        monkeypatch.setattr(mean_quantiles, "_same_means", lambda m, reference: False)
    rng = np.random.default_rng(3)
    n, reps = 10, 2_000
    x = _rows(kind, 701, n, rng)  # 701: the last chunk is a single row
    counts = np.random.default_rng([0, n]).multinomial(n, np.full(n, 1.0 / n), size=reps)
    weights = counts.T / n
    chunk = mean_quantiles._CHUNK_ELEMENTS // reps
    with np.errstate(invalid="ignore"):
        expected = np.concatenate(
            [np.quantile(x[s : s + chunk] @ weights, Q, axis=1) for s in range(0, len(x), chunk)], axis=1
        )
        low, high = mean_quantiles.quantiles_of_means(x, counts, Q)
    assert np.array_equal(low, expected[0], equal_nan=True) and np.array_equal(high, expected[1], equal_nan=True)


@pytest.mark.parametrize("t", [0.025, 0.3, 0.5, 0.7, 0.975])
def test_lerp_is_numpys_interpolation(t):
    """np.quantile of [a, b] at t interpolates a -> b by t: ``_lerp`` gives its very bits."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=20_000)
    b = a + rng.exponential(size=20_000) * 10.0 ** rng.integers(-8, 2, 20_000)
    assert np.array_equal(mean_quantiles._lerp(a, b, np.float64(t)), np.quantile(np.stack([a, b], axis=1), t, axis=1))


def _percentile_loop(values: list[float], reps: int = leaderboard.BOOTSTRAP_REPS) -> tuple[float, float]:
    """A cell's 95% percentile-bootstrap interval, one resample at a time: the leaderboard's draws (a
    generator seeded (0, n) per number of values n, multinomial counts of the sorted values)."""
    x = sorted(values)
    n = len(x)
    counts = np.random.default_rng([stats.DEFAULT_SEED, n]).multinomial(n, np.full(n, 1.0 / n), size=reps)
    means = [sum(c * v for c, v in zip(row, x)) / n for row in counts]
    low, high = np.quantile(means, Q)
    return float(low), float(high)


def test_bootstrap_cells_matches_a_loop_over_cells():
    rng = np.random.default_rng(5)
    cells = [list(rng.normal(0.4, 0.1, size)) for size in (1, 2, 3, 5, 5, 10, 10, 10)] + [[0.2] * 4]
    low, high = leaderboard.bootstrap_cells(pa.array(cells, pa.list_(pa.float64())))
    for values, lo, hi in zip(cells, low, high):
        if len(values) < 2:
            assert np.isnan(lo) and np.isnan(hi)
        elif len(set(values)) == 1:
            assert lo == hi == values[0]
        else:  # the same means up to the order of a sum's terms
            assert (lo, hi) == pytest.approx(_percentile_loop(values), rel=1e-12, abs=1e-15)


def test_iqm_intervals_equal_the_replication_loop(monkeypatch):
    """``stratified_bootstrap_iqm_cis`` is ``stratified_bootstrap_ci`` with its generic loop (one
    ``aggregate_iqm`` per replication), number for number; also over several chunks of draws and
    when they are drawn again from the generator's saved state."""
    rng = np.random.default_rng(7)
    matrices = [
        rng.normal(0.6, 0.2, (10, 20)),
        rng.normal(0.3, 0.2, (10, 20)),
        rng.integers(0, 3, (10, 20)) / 2,
        rng.normal(0, 1, (4, 3)),
        np.full((3, 2), 0.25),
        1e6 + rng.normal(0, 1e-6, (10, 20)),  # a large offset, a tiny spread
        rng.normal(0, 1e250, (10, 20)),  # huge scores
        np.where(
            np.arange(200).reshape(10, 20) == 7, 1e9, rng.normal(0.5, 0.01, (10, 20))
        ),  # one outlier: coarse levels
        np.where(np.arange(200).reshape(10, 20) == 7, 1.0, rng.normal(0.5, 3e-5, (10, 20))),  # a few levels apart
        -rng.integers(0, 2, (10, 20)).astype(float),  # two values, negative
    ]
    for chunk_elements in (stats._CHUNK_ELEMENTS, 50_000):
        monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", chunk_elements)
        fast = stats.stratified_bootstrap_iqm_cis(matrices, reps=800)
        loop = [stats.stratified_bootstrap_ci(m, stats.aggregate_iqm, reps=800, vectorized=False) for m in matrices]
        assert fast == loop
    assert stats.stratified_bootstrap_ci(matrices[0], stats.aggregate_iqm, reps=800) == loop[0]


def test_probability_of_improvement_intervals_equal_the_replication_loop():
    rng = np.random.default_rng(11)
    y = rng.normal(0.5, 0.1, (6, 4))
    xs = [rng.normal(0.55, 0.1, (6, 4)), np.round(rng.normal(0.5, 0.1, (6, 4)), 1), y.copy(), rng.normal(0, 1, (3, 4))]
    y = np.round(y, 1)  # ties with the rounded x
    reps = 500
    for x, (low, high) in zip(xs, stats.probability_of_improvement_cis(xs, y, reps=reps)):
        gen = np.random.default_rng(stats.DEFAULT_SEED)  # one chunk: x's draws, then y's
        idx_x = gen.integers(0, len(x), size=(reps, len(x), 4))
        idx_y = gen.integers(0, len(y), size=(reps, len(y), 4))
        tasks = np.arange(4)
        values = [stats.probability_of_improvement(x[idx_x[r], tasks], y[idx_y[r], tasks]) for r in range(reps)]
        alpha = 1 - 0.95  # a 95% interval, as stats computes its ends: 100 alpha / 2 is 2.5000000000000022
        assert (low, high) == tuple(float(v) for v in np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)]))
        assert (low, high) == stats.probability_of_improvement_ci(x, y, reps=reps)


def _results(values: dict[tuple[str, str, int], float]) -> pa.Table:
    rows = []
    for (method, task, seed), value in values.items():
        rows.append(synthetic_row(method, task, seed, value))
    return pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA)


def _markdown_table(text: str, first_header: str) -> dict[str, list[str]]:
    """The Markdown table whose header starts with ``first_header``: first column -> the other cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} "))
    out = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = cells[1:]
    return out


def _shown(text: str, value: float, spec: str = ".4f") -> bool:
    """Whether a table shows ``value`` as ``format(value, spec)``, every digit of it (trailing zeros and
    sign too: the tables print their numbers as text); the value +-1e-12 allows for a sum's rounding."""
    return text in {format(value + d, spec) for d in (-1e-12, 0.0, 1e-12)}


def _iqm(scores: np.ndarray) -> float:
    """Interquartile mean: drop a quarter (rounded down) of the sorted scores at each end, average the rest."""
    flat = sorted(scores.ravel())
    cut = len(flat) // 4
    return statistics.fmean(flat[cut : len(flat) - cut])


def test_a_small_board_renders_the_numbers_of_its_values():
    """Every number of the per-task, aggregate and pairwise tables of a small board, from the values:
    means, sample std, percentile-bootstrap intervals, normalized scores (base = 0, the best method =
    1), their IQM with a stratified-bootstrap interval, and P(X > lora)."""
    tasks, seeds = ["t1", "t2"], [0, 1, 2, 3]
    level = {"base": 0.11, "lora": 0.47, "pissa": 0.53, "olora": 0.41}
    values = {
        (m, t, s): level[m] + 0.0731 * j + 0.0137 * s * (1 + k) - 0.0091 * (s % 2) * k
        for k, m in enumerate(level)
        for j, t in enumerate(tasks)
        for s in seeds
    }
    board = leaderboard.build(_results(values))
    assert isinstance(board, Board) and all(isinstance(c, Cell) for c in board.suites[0].protocols["fixed"].cells)
    json.dumps(asdict(board))  # plain data all the way down
    text = render_board(board)

    cells = _markdown_table(text, "method")
    means = {}
    for method in level:
        row = cells[method + (" (reference)" if method == "base" else "")]
        for i, task in enumerate(tasks):
            x = [values[(method, task, s)] for s in seeds]
            means[(method, task)] = statistics.fmean(x)
            low, high = _percentile_loop(x)
            assert row[i] == (
                f"{statistics.fmean(x):.4f} ± {statistics.stdev(x):.4f} [{low:.4f}, {high:.4f}] (n={len(seeds)})"
            )
        assert _shown(row[-1], statistics.fmean([means[(method, t)] for t in tasks]))

    floor = {t: means[("base", t)] for t in tasks}
    ceiling = {t: max(means[(m, t)] for m in level if m != "base") for t in tasks}
    normalized = {
        m: np.array([[(values[(m, t, s)] - floor[t]) / (ceiling[t] - floor[t]) for t in tasks] for s in seeds])
        for m in level
    }
    draws = np.random.default_rng(stats.DEFAULT_SEED).integers(0, len(seeds), size=(leaderboard.IQM_REPS, 4, 2))
    aggregate = _markdown_table(text.split("Across tasks")[1], "method")
    for method, scores in normalized.items():
        replications = [_iqm(scores[d, np.arange(2)]) for d in draws]  # seeds resampled within each task
        low, high = np.percentile(replications, [2.5, 97.5])
        iqm, interval, mean, seen = aggregate[method + (" (reference)" if method == "base" else "")][:4]
        assert _shown(iqm, _iqm(scores)) and _shown(mean, scores.mean()) and seen == "4"
        assert all(_shown(a, b) for a, b in zip(interval.strip("[]").split(", "), (low, high)))

    versus = _markdown_table(text.split("Versus `lora`")[1], "method")
    for method in ("olora", "pissa", "base"):
        x, y = normalized[method], normalized["lora"]
        poi = statistics.fmean(
            (np.mean(x[:, j][:, None] > y[:, j][None, :]) + 0.5 * np.mean(x[:, j][:, None] == y[:, j][None, :]))
            for j in range(2)
        )
        assert versus[method][0].startswith(f"{poi:.3f} [")
        assert _shown(versus[method][1], (x - y).mean(), "+.4f")
    assert all(isinstance(p, Pairwise) for p in board.suites[0].protocols["fixed"].pairwise)


def test_paired_tests_are_paired_test_one_at_a_time():
    """The batched tests (comparisons of more than 50 pairs go to scipy together) give each
    comparison's numbers exactly: ties, zeros, NaN pairs dropped (so batches of several sizes),
    constant differences, too few pairs and the exact test for small ones."""
    rng = np.random.default_rng(5)
    y = rng.normal(0.5, 0.1, (10, 20))
    xs = [
        rng.normal(0.55, 0.1, (10, 20)),
        rng.normal(0.45, 0.1, (10, 20)),
        np.round(rng.normal(0.5, 0.1, (10, 20)), 1),  # ties among the differences
        y.copy(),  # every difference zero
        y + 0.01,  # constant differences: t = inf
        np.where(rng.uniform(size=(10, 20)) < 0.1, np.nan, rng.normal(0.5, 0.1, (10, 20))),  # fewer pairs
        np.where(rng.uniform(size=(10, 20)) < 0.2, y, rng.normal(0.6, 0.1, (10, 20))),  # zeros among them
        rng.normal(0.5, 0.1, (10, 20)),
    ]
    pairs = [(x, y) for x in xs] + [(x[:3, :4], y[:3, :4]) for x in xs] + [(xs[0][:1, :1], y[:1, :1])]
    batched = stats.paired_tests(pairs)
    one_by_one = [stats.paired_test(x, y) for x, y in pairs]
    assert [repr(asdict(r)) for r in batched] == [repr(asdict(r)) for r in one_by_one]  # repr: every bit, NaN too
    assert sum(r.n_pairs > 50 for r in batched) >= 6


def test_a_cell_reads_as_its_f_string():
    """The per-task cell's %-formatting is the f-string text it replaced, whichever parts are missing."""
    from initbench.board.leaderboard_text import _fmt

    def f_string(r: Cell) -> str:
        spread = f" ± {r.std:.4f}" if r.std is not None and r.std == r.std else ""
        ci = f" [{r.ci_low:.4f}, {r.ci_high:.4f}]" if r.ci_low is not None and r.ci_low == r.ci_low else ""
        return f"{r.mean:.4f}{spread}{ci} (n={r.seeds})"

    values = [0.5, -0.123456, 0.00005, -0.0, 12345.6789, float("nan"), float("inf"), 1e-300]
    for mean, std, low in zip(values, values[3:] + [None, None, 0.25], values[5:] + [None, 0.1, -0.2, None, 0.3]):
        for s, lo in ((std, low), (None, low), (std, None), (float("nan"), low), (std, float("nan"))):
            cell = Cell("s", "h", "m", False, "t", "acc", mean, s, 3, lo, None if lo is None else lo + 0.5)
            assert _fmt(cell) == f_string(cell)
    missing = Cell("s", "h", "m", False, "t", "acc", None, None, 2, float("nan"), float("nan"))
    assert _fmt(missing) == "no value (n=2)"  # every seed's value None: said, not a crash


def test_sorted_by_ranks_is_arrows_sort_by():
    """The cells' order (a stable sort on ranks) is ``Table.sort_by``'s, ties kept in row order."""
    rng = np.random.default_rng(2)
    words = ["lora", "LoRA", "pissa", "ß", "é", "", "a b", "lora-ga", "10", "9"]
    table = pa.table(
        {
            "task": rng.choice(words, 300).tolist(),
            "method": rng.choice(words[:4], 300).tolist(),
            "seed": rng.integers(0, 3, 300),
            "row": np.arange(300),  # ties on every key are told apart by where they were
        }
    )
    keys = ["task", "method", "seed"]
    expected = table.sort_by([(k, "ascending") for k in keys])
    assert leaderboard._sorted_by(table, keys).equals(expected)
    assert leaderboard._sorted_by(table.slice(0, 0), keys).equals(expected.slice(0, 0))
    with_null = table.set_column(0, "task", pa.array([None] + table["task"].to_pylist()[1:]))
    assert leaderboard._sorted_by(with_null, keys).equals(with_null.sort_by([(k, "ascending") for k in keys]))


def test_primary_scores_laid_out_equal_the_dicts():
    """The primary scores laid out with numpy are those of the dicts filled row by row, bit for bit:
    methods in order of first appearance, per-task means (NaN where a method lacks a task), and each
    method's matrix on its common seeds (C order, as built from lists); a run in two rows goes to the
    dicts (the last counts)."""
    rng = np.random.default_rng(9)
    tasks = ["b-task", "a-task", "c-task"]  # primary's order, not sorted
    rows = []
    for method in ["m3", "base", "lora", "m1", "m0"]:
        for task in tasks:
            if method == "m1" and task == "c-task":
                continue  # a method missing a task: no matrix
            for seed in rng.permutation(9)[: rng.integers(5, 10)].tolist():  # 5 to 9 seeds, in any order
                rows.append({"method": method, "task": task, "seed": seed, "value": float(rng.normal(0.5, 0.2))})
    rng.shuffle(rows)
    ok = pa.Table.from_pylist(rows)
    laid = leaderboard._laid_out(ok, pa.array(tasks))
    filled = leaderboard._filled_in(ok, tasks)
    assert laid.methods == filled.methods and len(set(laid.methods)) == 5
    assert np.array_equal(laid.means, filled.means, equal_nan=True) and np.isnan(laid.means).sum() == 1
    assert laid.matrices[laid.methods.index("m1")] is None and sum(m is not None for m in laid.matrices) >= 3
    for a, b in zip(laid.matrices, filled.matrices):
        assert (a is None and b is None) or (
            np.array_equal(a[0], b[0]) and a[0].flags.c_contiguous and a[1] == b[1] and type(a[1][0]) is int
        )
    twice = pa.concat_tables([ok, ok.slice(0, 1)])
    assert leaderboard._laid_out(twice, pa.array(tasks)) is None


def test_per_run_is_pyarrows_first_per_run():
    """One row per run: what ``group_by("run_id").aggregate(first)`` gives, column for column (first
    non-null value), whichever columns hold nulls; runs interleaved, a run's first row null."""
    table = pa.table(
        {
            "run_id": ["r2", "r1", "r2", "r3", "r1", "r3"],
            "method": ["b", "a", "b", "c", "a", "c"],
            "init_seconds": [None, 1.5, 2.5, None, 1.0, None],  # r2: its second row; r3: none
            "train_seconds": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # no null
            "flops": pa.nulls(6, pa.float64()),  # every row null
        }
    )
    columns = ["init_seconds", "train_seconds", "flops"]
    for t in (table, table.slice(0, 0)):
        first = t.group_by(["run_id"], use_threads=False).aggregate([(c, "first") for c in columns + ["method"]])
        expected = first.rename_columns([c.removesuffix("_first") for c in first.column_names])
        assert leaderboard._per_run(t, columns).equals(expected)


def test_suite_keys_are_the_distinct_pairs():
    def pairs(suites, hashes):
        table = pa.table({"suite": pa.array(suites, pa.string()), "suite_hash": pa.array(hashes, pa.string())})
        grouped = table.group_by(["suite", "suite_hash"]).aggregate([])
        assert leaderboard._suite_keys(table) == sorted(
            zip(grouped["suite"].to_pylist(), grouped["suite_hash"].to_pylist())
        )
        return leaderboard._suite_keys(table)

    assert pairs(["s", "s", "s"], ["h", "h", "h"]) == [("s", "h")]
    assert pairs(["s", "t", "s"], ["h", "h", "h"]) == [("s", "h"), ("t", "h")]
    assert pairs(["s", "s"], ["h", "g"]) == [("s", "g"), ("s", "h")]
    assert pairs([], []) == []
    assert pairs([None, None], ["h", "h"]) == [(None, "h")]


PIPELINE = ["board", "mean_quantiles", "leaderboard", "leaderboard_text", "leaderboard_page", "publish"]


@pytest.mark.parametrize("position", range(len(PIPELINE)))
def test_a_leaderboard_module_imports_no_later_one(position):
    """compute -> text -> page -> publish: no import of a later stage, not even inside a function."""
    path = Path(__file__).resolve().parents[1] / "initbench" / "board" / f"{PIPELINE[position]}.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    later = {f"initbench.board.{m}" for m in PIPELINE[position + 1 :]}
    assert not imported & later, f"{path.name} imports {sorted(imported & later)}"


@pytest.mark.parametrize(
    ("methods", "seeds", "attainable"),
    [(("lora", "pissa", "olora"), (0, 1), False), (("lora", "pissa"), tuple(range(6)), True)],
)
def test_the_text_says_when_no_comparison_can_be_significant(tmp_path, methods, seeds, attainable):
    """2 seeds x 2 tasks = 4 pairs (exact p >= 1/8) over 2 comparisons can never pass Holm at 0.05;
    6 seeds x 2 tasks = 12 pairs (p >= 1/2048) over 1 comparison can."""
    text = render(fixed_tree(tmp_path / "runs", methods=methods, seeds=seeds))
    assert ("No row of this table can be significant" in text) is not attainable


def test_the_tuning_table_marks_a_choice_on_the_grids_edge(tmp_path):
    """Rates chosen at the lowest or highest rate tried say so (the best may lie outside the grid)."""
    chosen = {("lora", "addition"): 0.01, ("lora", "compare_sums"): 0.1, ("pissa", "addition"): 0.001}
    text = render(tuned_tree(tmp_path / "runs", chosen, grid=(0.001, 0.01, 0.1)))
    tuning = text.split("Tuning trials")[1].split("\n\n")[1]
    marked = {tuple(cell.strip() for cell in line.split("|")[1:3]) for line in tuning.splitlines() if "(edge)" in line}
    assert marked == {("lora", "compare_sums"), ("pissa", "addition")}
    assert "(edge): 2 of 3 choices are the lowest or highest rate tried" in text


def test_the_ranking_marks_a_method_whose_tuned_rate_is_on_the_grids_edge(tmp_path):
    from initbench.board.ranking import ranking, render_ranking
    from initbench.selection.counted import read_results

    chosen = {("lora", "addition"): 0.01, ("lora", "compare_sums"): 0.01, ("pissa", "addition"): 0.1}
    chosen[("pissa", "compare_sums")] = 0.01
    entry = leaderboard.build(read_results(tuned_tree(tmp_path / "runs", chosen))).suites[0]
    assert {r["method"]: r["rate_on_grid_edge"] for r in ranking(entry)} == {
        "base": [],
        "lora": [],
        "pissa": ["addition"],
    }
    marked = [line for line in render_ranking(entry).splitlines() if "(edge) " in line or "(edge)|" in line]
    assert len(marked) == 1 and "| pissa " in marked[0]
