"""Issue 18, finding 5: the trust model -- safe names, trusted generators and lm-eval task folders."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest

from initbench.cli import main
from initbench.inputs.data import materialize
from initbench.inputs.evaluation import task_yaml_path
from initbench.selection.contributed import check_contributed
from initbench.spec.suite import SuiteError, builtin_suite_dir, load_suite
from initbench.spec.trust import ENV_ALLOW_MODULES, ENV_LM_EVAL_PATH, contributed_problems, lm_eval_task_path

SMOKE = (builtin_suite_dir() / "smoke.yaml").read_text()
GENERATOR = (
    "generator: initbench_tasks.generators:addition\n      args: {digits: 1, n_train: 40, n_validation: 8, n_test: 8}"
)


def _suite(tmp_path, old: str, new: str, name: str = "mine.yaml"):
    assert old in SMOKE
    path = tmp_path / name
    path.write_text(SMOKE.replace(old, new, 1))
    return path


def test_a_shell_command_generator_is_refused_before_it_runs(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    path = _suite(tmp_path, GENERATOR, f"generator: os:system\n      args: {{command: 'touch {marker}'}}")
    with pytest.raises(SuiteError) as err:
        load_suite(str(path))
    assert "tasks[0].data.generator" in str(err.value) and ENV_ALLOW_MODULES in str(err.value)
    # a suite built in code goes through the same gate when its data is made
    smoke = load_suite("smoke")
    task = smoke.tasks[0]
    hostile = dataclasses.replace(
        task, data=dataclasses.replace(task.data, generator="os:system", args={"command": f"touch {marker}"})
    )
    with pytest.raises(SuiteError, match="outside the suites' own package"):
        materialize(hostile, smoke.path)
    assert main(["evaluate", "--suite", str(path), "--method", "base", "--out", str(tmp_path / "runs")]) == 2
    assert not marker.exists()


def test_an_allow_listed_generator_module_runs(tmp_path, monkeypatch):
    (tmp_path / "my_generators.py").write_text(
        "from initbench_tasks.generators import addition\n\ndef make(**kw):\n    return addition(**kw)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _suite(tmp_path, "initbench_tasks.generators:addition", "my_generators:make")
    with pytest.raises(SuiteError, match=f"{ENV_ALLOW_MODULES}=my_generators"):
        load_suite(str(path))
    monkeypatch.setenv(ENV_ALLOW_MODULES, "other, my_generators")
    suite = load_suite(str(path))
    assert materialize(suite.tasks[0], suite.path).records("test")
    # contributed results never take the user's allow-list
    assert any("my_generators" in p and "tasks[0].data.generator" in p for p in contributed_problems(suite))


@pytest.mark.parametrize(
    "old, new, key",
    [
        ("name: smoke", "name: ../../escape", "'name'"),
        ("name: smoke", "name: /tmp/abs", "'name'"),
        ("  - name: addition", "  - name: ../addition", "'tasks[0].name'"),
        ("  - name: addition", '  - name: "add\\x07ition"', "'tasks[0].name'"),
        ("lm_eval_task: initbench_addition", "lm_eval_task: ../../evil/task", "'tasks[0].lm_eval_task'"),
        ("lm_eval_task: initbench_addition", "lm_eval_task: ..", "'tasks[0].lm_eval_task'"),
    ],
)
def test_names_must_be_safe_path_components(tmp_path, old, new, key):
    path = _suite(tmp_path, old, new)
    with pytest.raises(SuiteError) as err:
        load_suite(str(path))
    assert str(path) in str(err.value) and key in str(err.value) and "names become folder names" in str(err.value)


def test_lm_eval_tasks_come_from_trusted_folders_only(tmp_path, monkeypatch):
    # `../smoke` used to resolve to tasks/smoke.yaml beside tasks/lm_eval: any YAML (and its `!function`) could load
    with pytest.raises(SuiteError, match="path separator"):
        task_yaml_path("../smoke")
    with pytest.raises(SuiteError, match="no lm-eval task YAML mine.yaml"):
        lm_eval_task_path("mine")
    folder = tmp_path / "my_lm_eval"
    folder.mkdir()
    (folder / "mine.yaml").write_text((builtin_suite_dir() / "lm_eval" / "initbench_addition.yaml").read_text())
    monkeypatch.setenv(ENV_LM_EVAL_PATH, str(folder))
    assert lm_eval_task_path("mine") == folder / "mine.yaml"
    assert lm_eval_task_path("initbench_addition").parent == builtin_suite_dir() / "lm_eval"  # built-ins first
    with pytest.raises(SuiteError, match="no lm-eval task YAML mine.yaml"):
        lm_eval_task_path("mine", user=False)  # what contributed results are held to


def test_contributed_results_name_a_builtin_suite_never_a_path(tmp_path):
    # A row's `suite` used to be handed to load_suite, which reads a YAML at any path: a crafted one-task
    # suite file with its own hash passed as "valid".
    path = tmp_path / "smoke.yaml"
    path.write_text(SMOKE.split("  - name: compare_sums")[0])  # smoke cut to one task
    forged = load_suite(str(path))
    rows = [
        {
            "suite": str(path),
            "suite_hash": forged.spec_hash,
            "method": "lora",
            "task": "addition",
            "seed": 0,
            "protocol": "fixed",
            "phase": "final",
            "learning_rate": 0.01,
            "eval_split": "test",
        }
    ]
    problems = check_contributed(pa.Table.from_pylist(rows))
    assert problems and "not a built-in suite" in problems[0]
    assert contributed_problems(load_suite("smoke")) == []  # the built-ins keep to the trust model


def test_a_results_row_cannot_make_initbench_import_a_task_yaml_function(tmp_path):
    # The leaderboard looks up each row's `lm_eval_task` for its primary metric; with `../` in a contributed
    # row it loaded any YAML, and lm-eval's `!function` imported (ran) the module beside it.
    import os

    from initbench.inputs.evaluation import primary_metric

    evil, marker = tmp_path / "evil", tmp_path / "ran"
    evil.mkdir()
    (evil / "evil_utils.py").write_text(f"open({str(marker)!r}, 'w').close()\n\ndef f(doc):\n    return doc\n")
    (evil / "evil.yaml").write_text(
        "task: evil\nprocess_docs: !function evil_utils.f\nmetric_list:\n  - {metric: acc}\n"
    )
    name = os.path.relpath(evil / "evil", builtin_suite_dir() / "lm_eval")
    with pytest.raises(SuiteError, match="path separator"):
        primary_metric(name)
    assert not marker.exists()
