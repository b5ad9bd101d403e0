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


def test_wall_time_is_averaged_over_runs_that_computed_their_training():
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
