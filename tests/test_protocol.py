"""The tuned protocol on `smoke`: tuning never reads test, every trial and final is written and marked."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pytest

import initbench.inputs.evaluation as evaluation
import initbench.run.harness as harness
from initbench.inputs.data import materialize, with_validation
from initbench.inputs.evaluation import Score
from initbench.method.registry import get_method
from initbench.selection.contributed import check_contributed
from initbench.selection.counted import read_results
from initbench.selection.protocol import Selection, choose_lr, select
from initbench.selection.tuning_grid import trial_grids
from initbench.spec.suite import SuiteError, load_suite
from initbench.store.results import validate
from initbench.sweeps.executors import InlineExecutor
from initbench.sweeps.sweep import run_sweep


def _suite_with(tmp_path, tuning: str):
    text = open(load_suite("smoke").path).read().split("\ntuning:")[0]
    path = tmp_path / "s.yaml"
    path.write_text(text + "\n" + tuning)
    return path


@pytest.mark.parametrize(
    "tuning, fragment",
    [
        ("tuning: {lr_grid: [0.001, 0.002, 0.1], seeds: [0]}", "log-spaced"),
        ("tuning: {lr_grid: [0.01, 0.001], seeds: [0]}", "ascending"),
        ("tuning: {lr_grid: [], seeds: [0]}", "at least one learning rate"),
        ("tuning: {lr_grid: [0.001, 0.01], seeds: []}", "tuning.seeds"),
        ("tuning: {lr_grid: [-1.0], seeds: [0]}", "positive"),
    ],
)
def test_tuning_section_is_validated(tmp_path, tuning, fragment):
    with pytest.raises(SuiteError, match=fragment):
        load_suite(str(_suite_with(tmp_path, tuning)))


def test_tuning_grid_is_not_part_of_the_spec_hash(tmp_path, smoke_suite):
    other = load_suite(str(_suite_with(tmp_path, "tuning: {lr_grid: [0.0001, 0.0003, 0.001, 0.003], seeds: [1, 2]}")))
    assert other.tuning.lr_grid == [0.0001, 0.0003, 0.001, 0.003]
    assert other.spec_hash == smoke_suite.spec_hash


def test_selection_breaks_ties_towards_the_default_rate():
    s = Selection("m", "t", "acc", True, {0.001: [0.5], 0.01: [0.7], 0.1: [0.7]})
    assert choose_lr(s, 0.01) == 0.01
    s = Selection("m", "t", "acc", True, {0.001: [0.9], 0.01: [None], 0.1: [0.2]})
    assert choose_lr(s, 0.01) == 0.001
    s = Selection("m", "t", "acc", True, {0.001: [None], 0.01: [None]})
    assert choose_lr(s, 0.01) == 0.01 and "failed" in s.reason


def test_files_tasks_get_a_carved_validation_split(tmp_path, smoke_suite):
    data = materialize(smoke_suite.tasks[0])
    files_only = type(data)({"train": data.files["train"], "test": data.files["test"]}, "x")
    carved = with_validation(files_only)
    again = with_validation(files_only)
    train, val = carved.records("train"), carved.records("validation")
    assert len(val) == 4 and len(train) == 36  # 10% of 40, held out of training
    assert not {json.dumps(r, sort_keys=True) for r in val} & {json.dumps(r, sort_keys=True) for r in train}
    assert carved.files["test"] == data.files["test"] and again.records("validation") == val
    assert with_validation(data) is data  # generators already make one


def _tune(suite, out, task):
    outcomes = run_sweep(
        suite, [get_method("lora")], [0], out, InlineExecutor(), protocol="tuned", tasks=[task], report=lambda _: None
    )
    grid = trial_grids(suite, ["lora"], [task.name], out)[("lora", task.name)]
    return outcomes, select(suite, "lora", task, out, grid)  # re-reads the trial files the sweep selected from


def test_tuning_never_reads_the_test_split(smoke_suite, tmp_path, monkeypatch):
    task = smoke_suite.tasks[1]  # compare_sums: accuracy moves with the rate
    _, clean = _tune(smoke_suite, tmp_path / "clean", task)

    real_evaluate, real_config = harness.evaluate, evaluation.task_config
    seen = []

    def spy_config(task_name, data, split="test", folder=None):
        config = real_config(task_name, data, split, folder)
        seen.append((split, sorted(config["dataset_kwargs"]["data_files"]), config["test_split"]))
        return config

    def poisoned(model, tokenizer, task_name, data, *, split="test", **kwargs):
        scores, seconds = real_evaluate(model, tokenizer, task_name, data, split=split, **kwargs)
        if split == "test":  # garbage for test: if tuning looked at it, the choice would move
            return [Score(s.metric, -1000.0 - len(seen), None) for s in scores], seconds
        return scores, seconds

    monkeypatch.setattr(evaluation, "task_config", spy_config)
    monkeypatch.setattr(harness, "evaluate", poisoned)
    outcomes, poisoned_choice = _tune(smoke_suite, tmp_path / "poisoned", task)

    assert poisoned_choice.chosen == clean.chosen and poisoned_choice.trials == clean.trials
    trials = [s for s in seen if s[0] == "validation"]
    assert len(trials) == len(smoke_suite.tuning.lr_grid)
    assert all("test" not in files and test_split == "validation" for _, files, test_split in trials)
    finals = [o for o in outcomes if "lr" in str(o.path) and "-test-" in str(o.path)]
    assert finals and all(v <= -1000 for o in finals for v in o.scores.values())  # the poison was live


def test_trials_and_finals_are_written_and_marked(smoke_suite, tmp_path):
    out = tmp_path / "runs"
    task = smoke_suite.tasks[1]
    _, selection = _tune(smoke_suite, out, task)
    table = read_results(out)
    assert validate(out) == []
    trials = table.filter(pc.equal(table["phase"], "trial")).to_pylist()
    assert sorted(r["learning_rate"] for r in trials) == smoke_suite.tuning.lr_grid
    assert {r["eval_split"] for r in trials} == {"validation"} and {r["protocol"] for r in trials} == {"tuned"}
    assert len({r["run_id"] for r in trials}) == 3
    finals = table.filter(pc.equal(table["phase"], "final")).to_pylist()
    tuned = [r for r in finals if r["protocol"] == "tuned"]
    fixed = [r for r in finals if r["protocol"] == "fixed"]
    assert [r["selected_lr"] for r in tuned] == [selection.chosen] == [tuned[0]["learning_rate"]]
    assert fixed[0]["learning_rate"] == smoke_suite.budget.optimizer.lr and fixed[0]["selected_lr"] is None
    assert {r["eval_split"] for r in finals} == {"test"}
    files = sorted(p.name for p in (out / "smoke" / "lora" / task.name).iterdir())
    assert sum(n.endswith("-validation-" + smoke_suite.spec_hash + ".results.parquet") for n in files) == 3
    record = json.loads((out / "smoke" / "lora" / task.name / f"selection-{smoke_suite.spec_hash}.json").read_text())
    assert record["selected_lr"] == selection.chosen and len(record["trials"]) == 3
    # a contribution with one task only is incomplete, and the message says what is missing
    problems = check_contributed(table)
    assert len(problems) == 1 and "method 'lora'" in problems[0] and "addition seed 0" in problems[0]
    assert "addition lr 0.001 seed 0" in problems[0]
