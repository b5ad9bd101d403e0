"""One primary metric per task in every cross-task number, and no normalization on a ceiling at or
below the floor (issue 18, finding 12)."""

from __future__ import annotations

import pyarrow as pa
import pytest
import yaml
from _trees import synthetic_row

from initbench.board import leaderboard
from initbench.board.leaderboard_text import render_board
from initbench.inputs.evaluation import primary_metric, task_primary_metric
from initbench.spec.suite import SuiteError, load_suite
from initbench.store.results import RESULTS_SCHEMA

STRICT, FLEXIBLE = "exact_match,strict-match", "exact_match,flexible-extract"


def _table(
    values: dict[tuple[str, str, str], float], lm_eval_task: str = "initbench_gsm8k", recorded: str | None = None
) -> pa.Table:
    """Rows for (method, task, metric) -> value, two seeds each (the same value)."""
    rows = []
    for (method, task, metric), value in values.items():
        for seed in (0, 1):
            rows.append(
                synthetic_row(method, task, seed, value, metric, lm_eval_task=lm_eval_task, primary_metric=recorded)
            )
    return pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA)


def _mean_over_tasks(text: str, method: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(f"| {method} "))
    return float(line.rstrip("|").rsplit("|", 1)[-1])


def test_the_default_primary_metric_is_the_first_metric_under_the_first_filter():
    assert primary_metric("initbench_gsm8k") == (STRICT, True)
    assert primary_metric("initbench_boolq") == ("acc", True)


def test_mean_over_tasks_uses_one_primary_metric_per_task():
    values = {
        ("lora", "g1", STRICT): 0.2,
        ("lora", "g1", FLEXIBLE): 0.6,
        ("lora", "g2", STRICT): 0.4,
        ("lora", "g2", FLEXIBLE): 0.8,
    }
    text = render_board(leaderboard.build(_table(values)))
    assert _mean_over_tasks(text, "lora") == pytest.approx(
        0.3
    )  # strict-match of g1 and g2, not 0.5 over all four cells
    assert "strict-match, primary" in text and "mean over tasks (primary metrics)" in text
    recorded = leaderboard.build(_table(values, recorded=FLEXIBLE))  # a suite that chose flexible-extract
    assert recorded.suites[0].protocols["fixed"].primary == {"g1": FLEXIBLE, "g2": FLEXIBLE}
    assert _mean_over_tasks(render_board(recorded), "lora") == pytest.approx(0.7)


def test_a_ceiling_at_or_below_the_floor_does_not_normalize():
    values = {
        ("base", "t1", "acc"): 0.5,
        ("lora", "t1", "acc"): 0.3,  # lora below base on t1
        ("base", "t2", "acc"): 0.2,
        ("lora", "t2", "acc"): 0.6,
    }
    board = leaderboard.build(_table(values, lm_eval_task="initbench_compare_sums"))
    block = board.suites[0].protocols["fixed"]
    assert block.normalization.not_normalizable == ["t1"]
    assert block.normalization.ceiling == {"t2": "lora"}
    aggregate = {r.method: r for r in block.aggregate}
    assert aggregate["lora"].tasks == 1 and aggregate["lora"].iqm == pytest.approx(1.0)
    assert aggregate["base"].iqm == pytest.approx(0.0)
    assert "t1: not normalizable" in render_board(board)
    equal = leaderboard.build(
        _table({("base", "t1", "acc"): 0.5, ("lora", "t1", "acc"): 0.5}, lm_eval_task="initbench_compare_sums")
    )
    block = equal.suites[0].protocols["fixed"]
    assert block.normalization.not_normalizable == ["t1"] and block.aggregate == []


def _suite_with_primary(tmp_path, primary: str):
    spec = yaml.safe_load(open(load_suite("smoke").path))
    spec["tasks"][0]["primary_metric"] = primary
    path = tmp_path / "primary.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_suite(str(path))


def test_a_suite_names_a_tasks_primary_metric(tmp_path):
    smoke = load_suite("smoke")
    chosen = _suite_with_primary(tmp_path, "exact_match")
    assert task_primary_metric(chosen.tasks[0], chosen.path) == ("exact_match", True)
    assert chosen.spec_hash != smoke.spec_hash  # it changes what the leaderboard reports
    assert task_primary_metric(smoke.tasks[0]) == ("exact_match", True)  # unset: the task's default
    wrong = _suite_with_primary(tmp_path, "acc_norm")
    with pytest.raises(
        SuiteError,
        match=r"primary\.yaml: key 'tasks\.addition\.primary_metric' is 'acc_norm', "
        r"not a metric initbench_addition records; one of exact_match",
    ):
        task_primary_metric(wrong.tasks[0], wrong.path)


def test_tuning_selects_on_a_metric_the_gsm8k_runs_record():
    """Before, the primary metric of initbench_gsm8k was ``exact_match``, a key no row records, so
    every tuning trial on GSM8K read as failed and the default rate was always chosen."""
    from initbench.inputs.evaluation import parse_scores

    recorded = {
        s.metric
        for s in parse_scores(
            {
                "exact_match,strict-match": 0.5,
                "exact_match_stderr,strict-match": 0.1,
                "exact_match,flexible-extract": 0.6,
            }
        )
    }
    metric, _ = task_primary_metric(load_suite("math-mini").task("gsm8k"))
    assert metric in recorded
