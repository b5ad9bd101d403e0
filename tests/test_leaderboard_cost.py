"""The leaderboard's cost table: a run that restored its init or training does not make a method look cheaper."""

from __future__ import annotations

import pyarrow as pa

from initbench.board.leaderboard import COST_COLUMNS, _cost


def _runs(rows: list[dict]) -> pa.Table:
    full = [
        {**{c: 1.0 for c in COST_COLUMNS}, "phase": "final", "init_reused": None, "train_reused": None, **r}
        for r in rows
    ]
    return pa.Table.from_pylist(full)


def test_wall_time_is_summarized_over_runs_that_computed_their_training():
    view = _runs(
        [
            {"run_id": "a0", "method": "a", "wall_seconds": 100.0, "train_reused": False},
            {"run_id": "a1", "method": "a", "wall_seconds": 300.0},  # older rows: no reuse column value
            {"run_id": "a2", "method": "a", "wall_seconds": 5.0, "train_reused": True},
            {"run_id": "a3", "method": "a", "wall_seconds": 7.0, "init_reused": True, "train_reused": False},
            {"run_id": "b0", "method": "b", "wall_seconds": 9.0, "train_reused": True},  # nothing computed: kept
        ]
    )
    cost = {r.method: r for r in _cost(view, view)}
    assert cost["a"].wall_seconds == 200.0 and cost["a"].runs == 4
    assert cost["b"].wall_seconds == 9.0


def test_timings_are_medians_and_counts_are_means():
    """One run slowed by a paused machine (500 s against 10 s) leaves the timings where the other runs are;
    parameters, tokens and FLOPs are means, peak memory the max."""
    view = _runs(
        [
            {
                "run_id": "a0",
                "method": "a",
                "train_reused": False,
                "init_reused": False,
                "train_seconds": 10.0,
                "init_seconds": 2.0,
                "train_tokens": 100.0,
                "peak_memory_bytes": 5.0,
                "train_tokens_per_second": 10.0,
            },
            {
                "run_id": "a1",
                "method": "a",
                "train_seconds": 12.0,
                "init_seconds": 2.0,
                "train_tokens": 100.0,
                "peak_memory_bytes": 7.0,
                "train_tokens_per_second": 8.0,
            },
            {
                "run_id": "a2",
                "method": "a",
                "train_seconds": 500.0,
                "init_seconds": None,
                "train_tokens": 400.0,
                "peak_memory_bytes": 6.0,
                "train_tokens_per_second": 0.2,
            },
            {"run_id": "b0", "method": "b", "train_seconds": 3.0, "init_seconds": None, "mfu": None},
        ]
    )
    cost = {r.method: r for r in _cost(view, view)}
    a, b = cost["a"], cost["b"]
    assert (a.train_seconds, a.init_seconds, a.train_tokens_per_second) == (12.0, 2.0, 8.0)
    assert a.train_tokens == 200.0 and a.peak_memory_bytes == 7.0 and a.flops == 1.0
    assert b.train_seconds == 3.0 and b.init_seconds is None and b.mfu is None
