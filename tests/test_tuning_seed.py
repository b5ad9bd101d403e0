"""The board's tuning-seed check (``initbench.board.tuning_seed``): the tuning seed's finals minus the
other seeds', per protocol, and the paired difference, on trees whose gaps are known by construction."""

from __future__ import annotations

import math

import pytest
from _trees import METRIC, smoke_row, tuned_tree, write_smoke_run

from initbench.board import stats
from initbench.board.leaderboard import build
from initbench.board.leaderboard_text import render_board
from initbench.selection.counted import read_results

# seed 0 (the tuning seed of tuned_tree) sits above seeds 1 and 2 by a known amount per method: under
# the tuned protocol by LIFT[m]; the runs at the suite's rate are tuned_tree's finals - 0.1, the same gap
LIFT = {"lora": 0.15, "pissa": 0.03, "olora": -0.06}


def _final(method: str, task: str, seed: int) -> float:
    return 0.6 + (0.05 if task == "compare_sums" else 0.0) + (LIFT[method] if seed == 0 else 0.01 * seed)


def _check(tmp_path):
    tuned_tree(tmp_path, {(m, t): 0.01 for m in LIFT for t in METRIC}, seeds=(0, 1, 2), final=_final)
    return build(read_results(tmp_path)).suites[0]


def test_gaps_are_the_tuning_seed_minus_the_mean_of_the_others(tmp_path):
    suite = _check(tmp_path)
    check = suite.tuning_seed
    assert check.tuning_seeds == [0] and check.final_seeds == 3
    rows = {r.comparison: r for r in check.rows}
    # per (method, task): LIFT - mean(0.01, 0.02) = LIFT - 0.015, the same on both tasks; base (no
    # learning rate) is left out
    expected = [LIFT[m] - 0.015 for m in LIFT for _ in METRIC]
    for protocol in ("tuned", "fixed"):  # tuned_tree's fixed runs are its finals - 0.1: the same gaps
        assert rows[protocol].pairs == len(expected)
        assert math.isclose(rows[protocol].mean, sum(expected) / len(expected))
        assert rows[protocol].share_positive == pytest.approx(4 / 6)
        low, high = stats.bootstrap_ci(expected, method="percentile", rng=stats.DEFAULT_SEED)
        assert (rows[protocol].ci_low, rows[protocol].ci_high) == pytest.approx((low, high), abs=1e-12)
    paired = rows["tuned - fixed (paired)"]
    assert paired.pairs == len(expected) and math.isclose(paired.mean, 0.0, abs_tol=1e-12)


def test_the_paired_difference_is_what_the_choice_adds(tmp_path):
    tuned_tree(tmp_path, {(m, t): 0.01 for m in LIFT for t in METRIC}, seeds=(0, 1, 2), final=_final)
    # at the suite's rate, lora's seed 0 on addition sits at the other seeds' mean (0.515): gap 0 there,
    # so the tuned gap of that pair (0.135) is all choice; every other pair adds nothing
    write_smoke_run(tmp_path, smoke_row("lora", "addition", 0, 0.515))
    rows = {r.comparison: r for r in build(read_results(tmp_path)).suites[0].tuning_seed.rows}
    assert math.isclose(rows["tuned - fixed (paired)"].mean, (LIFT["lora"] - 0.015) / 6)
    assert math.isclose(rows["fixed"].mean, sum(LIFT[m] - 0.015 for m in LIFT for _ in METRIC) / 6 - 0.135 / 6)


def test_the_check_is_rendered_with_how_to_read_it(tmp_path):
    suite = _check(tmp_path)
    from initbench.board.board import Board

    text = render_board(Board([suite], []))
    assert "Tuning-seed check: the finals of the tuning seed(s) (0)" in text
    assert "about 1/3 of the paired difference" in text
    assert "| tuned - fixed (paired) |" in text


def test_no_check_without_tuned_trials(tmp_path):
    from _trees import fixed_tree

    fixed_tree(tmp_path, seeds=(0, 1, 2))
    assert build(read_results(tmp_path)).suites[0].tuning_seed is None
