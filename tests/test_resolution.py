"""The board's resolution per task (``initbench.board.resolution``) on cells whose spread is known."""

from __future__ import annotations

import math

from initbench.board.board import Cell
from initbench.board.resolution import resolution

# z_{0.975} + z_{0.8}, from a normal table: 1.959964 + 0.841621
Z = 2.801585


def _cell(method: str, task: str, metric: str, std: float | None, seeds: int = 3, reference: bool = False) -> Cell:
    return Cell("s", "h", method, reference, task, metric, 0.5, std, seeds, 0.4, 0.6)


def test_pooled_sd_lora_sd_and_the_detectable_difference():
    cells = [
        _cell("lora", "a", "acc", 0.03),
        _cell("pissa", "a", "acc", 0.04),
        _cell("pissa", "a", "f1", 0.5),  # not the primary metric: left out
        _cell("base", "a", "acc", 0.0, reference=True),  # a reference: left out
        _cell("olora", "a", "acc", None, seeds=1),  # one seed: no spread
        _cell("milora", "a", "acc", 0.02, seeds=2),
        _cell("lora", "b", "em", 0.10),
    ]
    rows = {r.task: r for r in resolution(cells, {"a": "acc", "b": "em"})}
    a = rows["a"]
    assert (a.metric, a.methods, a.seeds) == ("acc", 3, 3)  # 3 seeds: the most common count
    assert math.isclose(a.pooled_sd, math.sqrt((0.03**2 + 0.04**2 + 0.02**2) / 3))
    assert a.reference_sd == 0.03
    assert math.isclose(a.minimum_detectable_difference, Z * a.pooled_sd * math.sqrt(2 / 3), rel_tol=1e-6)
    b = rows["b"]
    assert (b.methods, b.pooled_sd, b.reference_sd) == (1, 0.10, 0.10)
    assert math.isclose(b.minimum_detectable_difference, Z * 0.10 * math.sqrt(2 / 3), rel_tol=1e-6)


def test_no_row_without_a_trained_method_of_two_seeds():
    cells = [_cell("base", "a", "acc", 0.0, reference=True), _cell("lora", "a", "acc", None, seeds=1)]
    assert resolution(cells, {"a": "acc"}) == []
    rows = resolution([_cell("pissa", "a", "acc", 0.05)], {"a": "acc"})
    assert rows[0].reference_sd is None  # no lora cell
