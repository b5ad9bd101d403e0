"""``tuning.extend_at_edge``: a grid grows past the edge its best rate sits on, by the same rule for
every method, and the sweep, the selection file, the plan and ``status`` agree on what was tried."""

from __future__ import annotations

import json
import math

import pytest
import yaml

import initbench.selection.protocol as protocol
import initbench.sweeps.sweep as sweep
from initbench.method.registry import get_method
from initbench.selection.protocol import selection_path
from initbench.selection.status import grid_status
from initbench.selection.tuning_grid import FIXED, TrialGrid, extension_wanted, rate_beyond, reachable_rates
from initbench.spec.suite import SuiteError, builtin_suite_dir, load_suite
from initbench.sweeps.executors import InlineExecutor

GRID = [0.001, 0.003, 0.01]


def _suite(tmp_path, **tuning):
    spec = yaml.safe_load((builtin_suite_dir() / "smoke.yaml").read_text())
    spec["tuning"] = {"lr_grid": GRID, "seeds": [0], **tuning}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_suite(str(path))


def test_the_next_rate_continues_the_grids_own_pattern():
    mini = [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]  # 1-3-10 steps: one decade on, the same pattern
    assert rate_beyond(mini, "highest") == 0.03
    assert rate_beyond([*mini, 0.03], "highest") == 0.1
    assert rate_beyond(mini, "lowest") == 1e-5
    assert rate_beyond([1e-5, *mini], "lowest") == 3e-6
    assert rate_beyond([1.0, 2.0, 4.0], "highest") == 8.0  # doubling: a decade is not a step of it
    assert rate_beyond([1.0, 2.0, 4.0], "lowest") == 0.5
    assert rate_beyond([0.001, 0.01, 0.1], "highest") == 1.0
    with pytest.raises(ValueError, match="two or more rates"):
        rate_beyond([0.01], "highest")


def test_an_extended_grid_is_still_a_grid_the_suite_accepts(tmp_path):
    grid = [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    for side in ("lowest", "highest", "highest", "lowest"):
        grid = sorted([*grid, rate_beyond(grid, side)])
    assert grid == [3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 0.03, 0.1]
    assert _suite(tmp_path, lr_grid=grid).tuning.lr_grid == grid  # log-spaced within 25%: accepted as a grid


def test_an_extension_is_wanted_only_at_an_edge_and_within_the_limit():
    grid = TrialGrid(FIXED, GRID)
    assert extension_wanted(grid, 0.003, 2) is None  # inside
    assert extension_wanted(grid, None, 2) is None  # every trial failed: the default rate stands in
    assert extension_wanted(grid, 0.01, 0) is None  # not allowed
    assert extension_wanted(grid, 0.01, 2) == 0.03
    assert extension_wanted(grid, 0.001, 2) == 0.0003
    twice = grid.with_rate(0.03).with_rate(0.1)
    assert twice.rates == [0.001, 0.003, 0.01, 0.03, 0.1] and twice.extended == [0.03, 0.1]
    assert extension_wanted(twice, 0.1, 2) is None  # the limit reached: the edge stays (the board marks it)
    assert twice.as_record()["extended"] == [0.03, 0.1] and "extended" not in grid.as_record()


def test_reachable_rates_are_what_the_limit_allows_on_both_sides(tmp_path):
    suite = _suite(tmp_path, extend_at_edge=2)
    assert reachable_rates(suite.tuning, GRID) == [0.0003, 0.0001, 0.03, 0.1]


@pytest.mark.parametrize("value, ok", [(0, True), (2, True), (4, True), (-1, False), (5, False)])
def test_the_limit_is_validated_and_not_part_of_the_spec_hash(tmp_path, smoke_suite, value, ok):
    if not ok:
        with pytest.raises(SuiteError, match="tuning.extend_at_edge"):
            _suite(tmp_path, extend_at_edge=value)
        return
    assert _suite(tmp_path, extend_at_edge=value).spec_hash == smoke_suite.spec_hash


def _scores(peak: float):
    """A validation score that rises with the rate up to ``peak`` and falls after it."""

    def score(stem, metric):
        lr = float(stem.name.split("-lr")[1].rsplit("-validation", 1)[0])  # "1e-05" keeps its minus
        return 1.0 - abs(math.log(lr / peak))

    return score


@pytest.mark.parametrize(
    "peak, extended, chosen",
    [
        (0.003, [], 0.003),  # inside the grid: nothing added
        (0.03, [0.03, 0.1], 0.03),  # past the top: 0.03 is best, then 0.1 shows it is inside
        (10.0, [0.03, 0.1], 0.1),  # still rising at the limit: the choice stays on the edge
        (1e-6, [0.0003, 0.0001], 0.0001),  # past the bottom
    ],
)
def test_a_tuned_sweep_extends_the_grid_then_selects_among_every_rate(tmp_path, monkeypatch, peak, extended, chosen):
    suite = _suite(tmp_path, extend_at_edge=2)
    ran = []
    monkeypatch.setattr(protocol, "_trial_score", _scores(peak))
    monkeypatch.setattr(sweep, "_run_batch", lambda suite, methods, specs, executor, report: ran.extend(specs) or [])
    monkeypatch.setattr(sweep, "record_contamination", lambda *args, **kwargs: None)
    out = tmp_path / "out"
    task = suite.tasks[0]
    sweep.run_sweep(
        suite,
        [get_method("lora")],
        [0, 1],
        out,
        InlineExecutor(),
        protocol="tuned",
        tasks=[task],
        report=lambda _: None,
    )
    trials = [s.lr for s in ran if s.split == "validation"]
    assert trials == [*GRID, *extended]  # each rate once, the added ones after the grid, in order
    finals = [s for s in ran if s.protocol == "tuned"]
    assert [(s.seed, s.lr, s.selected_lr) for s in finals] == [(0, chosen, chosen), (1, chosen, chosen)]
    selection = json.loads(selection_path(out, suite.name, "lora", task.name, suite.spec_hash).read_text())
    assert selection["selected_lr"] == chosen and selection["grid"].get("extended", []) == extended
    assert sorted(t["lr"] for t in selection["trials"]) == sorted([*GRID, *extended])
    plans = [json.loads(p.read_text())["tuning"] for p in (out / suite.name / "sweeps").glob("*.json")]
    recorded = [t["extended"]["lora"][task.name] for t in plans if "extended" in t]
    assert max(recorded, key=len, default=[]) == extended  # one plan per round; the last holds every rate added
    missing = grid_status(out).missing  # nothing was written: every planned run is missing
    for lr in extended:
        assert any(f"seed0-lr{lr:g}-validation" in m for m in missing), (lr, missing)
    assert sum("tuned-final" in m or f"seed1-lr{chosen:g}-" in m for m in missing) >= 1


def test_status_awaits_a_selection_made_before_rates_were_added(tmp_path, monkeypatch):
    suite = _suite(tmp_path, extend_at_edge=2)
    monkeypatch.setattr(protocol, "_trial_score", _scores(0.03))
    monkeypatch.setattr(sweep, "_run_batch", lambda *args: [])
    monkeypatch.setattr(sweep, "record_contamination", lambda *args, **kwargs: None)
    out = tmp_path / "out"
    task = suite.tasks[0]
    sweep.run_sweep(
        suite, [get_method("lora")], [0], out, InlineExecutor(), protocol="tuned", tasks=[task], report=lambda _: None
    )
    assert not any("awaiting selection over every rate" in m for m in grid_status(out).missing)
    protocol.select(suite, "lora", task, out, TrialGrid(FIXED, GRID))  # as a sweep stopped before it extended
    assert any("awaiting selection over every rate tried" in m for m in grid_status(out).missing)


def test_contributed_results_must_try_the_rates_past_an_edge(tmp_path):
    """``validate --contributed``: trials whose best rate is an edge, with the limit not reached, are
    incomplete until the next rate is tried (a sweep of an initbench without the rule stops short)."""
    from initbench.inputs.evaluation import task_primary_metric
    from initbench.selection.contributed import _rates_past_an_edge
    from initbench.spec.trust import suite_lm_eval_dir

    suite = _suite(tmp_path, extend_at_edge=2)
    metric, _ = task_primary_metric(suite.tasks[0], suite.path, suite_lm_eval_dir(suite))
    other = suite.tasks[1].name  # no trials at all: never on an edge, nothing asked

    def trials(scores: dict[float, float]) -> list[dict]:
        base = {"phase": "trial", "task": suite.tasks[0].name, "status": "ok"}
        return [{**base, "learning_rate": lr, "metric": metric, "value": v} for lr, v in scores.items()] + [
            {**base, "learning_rate": lr, "metric": "another", "value": -v} for lr, v in scores.items()
        ]

    rising = {0.001: 0.1, 0.003: 0.2, 0.01: 0.3}
    (problem,) = _rates_past_an_edge(suite, trials(rising))
    assert f"{suite.tasks[0].name} lr 0.03 " in problem and other not in problem
    assert "lr 0.1 " in _rates_past_an_edge(suite, trials({**rising, 0.03: 0.4}))[0]
    assert _rates_past_an_edge(suite, trials({**rising, 0.03: 0.4, 0.1: 0.35})) == []  # inside now
    assert _rates_past_an_edge(suite, trials({**rising, 0.03: 0.4, 0.1: 0.5})) == []  # the limit: 2
    assert _rates_past_an_edge(suite, trials({0.001: 0.1, 0.003: 0.5, 0.01: 0.3})) == []  # inside the grid
    failed = [
        {**r, "status": "failed", "metric": None, "value": None} if r["learning_rate"] == 0.03 else r
        for r in trials({**rising, 0.03: 0.4})
    ]
    assert _rates_past_an_edge(suite, failed) == []  # 0.03 tried and failed: 0.01 is inside the rates tried
