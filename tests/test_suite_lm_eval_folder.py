"""A suite's own folder of lm-eval task YAMLs (``lm_eval_include_path``, issue 15 item 4): resolved
against the suite file, loaded only once trusted (a task YAML runs code), named in every error."""

from __future__ import annotations

import json
import os

import pytest

from initbench.inputs.data import materialize
from initbench.inputs.evaluation import metric_keys, task_config, task_yaml_path
from initbench.inputs.preflight import check_suite
from initbench.spec.suite import SuiteError, builtin_suite_dir, load_suite
from initbench.spec.trust import ENV_LM_EVAL_PATH, contributed_problems, suite_lm_eval_dir

SMOKE = (builtin_suite_dir() / "smoke.yaml").read_text()
TEMPLATE = builtin_suite_dir() / "lm_eval" / "_initbench_mc_template.yaml"


def _suite(folder, *, include_path: str = "my_tasks", task: str = "my_compare") -> str:
    """smoke with its second task scored by ``task`` from the suite's own folder ``include_path``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = SMOKE.replace("lm_eval_task: initbench_compare_sums", f"lm_eval_task: {task}")
    path = folder / "suite.yaml"
    path.write_text(f"lm_eval_include_path: {include_path}\n" + text)
    return str(path)


def _own_task(folder, name: str = "my_compare") -> None:
    """A task YAML that includes the shipped multiple-choice template from another folder, by a path
    relative to itself (lm-eval's rule), and a helper its `!function` names."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "my_helpers.py").write_text("def keep(dataset):\n    return dataset\n")
    include = os.path.relpath(TEMPLATE, folder)
    (folder / f"{name}.yaml").write_text(f"include: {include}\ntask: {name}\nprocess_docs: !function my_helpers.keep\n")


def test_an_untrusted_folder_is_refused_before_its_code_can_run(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    (tmp_path / "my_tasks").mkdir()
    (tmp_path / "my_tasks" / "evil_utils.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\ndef f(d):\n    return d\n"
    )
    (tmp_path / "my_tasks" / "my_compare.yaml").write_text("task: my_compare\nprocess_docs: !function evil_utils.f\n")
    path = _suite(tmp_path)
    monkeypatch.delenv(ENV_LM_EVAL_PATH, raising=False)
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    message = str(err.value)
    assert path in message and "'lm_eval_include_path'" in message
    assert f"{ENV_LM_EVAL_PATH}={(tmp_path / 'my_tasks').resolve()}" in message  # the fix, ready to paste
    assert not marker.exists()


def test_a_trusted_folder_resolves_against_the_suite_file_and_includes_as_lm_eval_does(tmp_path, monkeypatch):
    suite_dir = tmp_path / "suites"
    _own_task(suite_dir / "my_tasks")
    monkeypatch.setenv(ENV_LM_EVAL_PATH, str(suite_dir))  # a trusted folder trusts its subfolders
    monkeypatch.chdir(tmp_path)  # not the suite's folder: the key is read from the suite file's folder
    suite = load_suite(_suite(suite_dir))
    own = suite_lm_eval_dir(suite)
    assert own == (suite_dir / "my_tasks").resolve()
    assert task_yaml_path("my_compare", own) == own / "my_compare.yaml"
    assert check_suite(suite, suite.tasks[1:]) == []
    config = task_config("my_compare", materialize(suite.tasks[1], suite.path), folder=own)
    assert config["doc_to_choice"] == "choices" and config["process_docs"].__name__ == "keep"  # template + own keys
    assert list(metric_keys("my_compare", own)) == ["acc", "acc_norm"]

    from lm_eval.tasks import TaskManager  # lm-eval, given the folder as its include_path, reads the same task

    manager = TaskManager(include_path=[str(own)], include_defaults=False)
    assert manager.all_subtasks == ["my_compare"]
    theirs = {"group": "check", "task": [{"task": "my_compare", "dataset_kwargs": config["dataset_kwargs"]}]}
    built = [manager.load([spec])["tasks"]["my_compare"].config for spec in (config, theirs)]
    for task in built:
        task.metadata.pop("config_source")
    assert built[0] == built[1]

    from initbench.board.share import write_task  # `initbench export` writes the task standalone, helper beside it

    written = write_task(tmp_path / "export", "my_compare", materialize(suite.tasks[1], suite.path), own)
    assert (written.parent / "my_helpers.py").is_file() and "include" not in written.read_text()
    assert "doc_to_choice: choices" in written.read_text() and "!function" in written.read_text()


def test_the_key_enters_the_spec_hash_only_when_set(tmp_path, monkeypatch):
    _own_task(tmp_path / "my_tasks")
    monkeypatch.setenv(ENV_LM_EVAL_PATH, str(tmp_path))
    plain = tmp_path / "plain.yaml"
    plain.write_text(SMOKE)
    assert load_suite(str(plain)).spec_hash == load_suite("smoke").spec_hash
    assert "lm_eval_include_path" not in load_suite("smoke").spec_dict()
    own = load_suite(_suite(tmp_path))
    assert own.spec_dict()["lm_eval_include_path"]["path"] == "my_tasks"
    # what the folder's files say is part of the spec: a changed task file is a new spec hash
    before = own.spec_hash
    (tmp_path / "my_tasks" / "my_helpers.py").write_text("def keep(dataset):\n    return dataset.select([0])\n")
    assert load_suite(_suite(tmp_path)).spec_hash != before
    (tmp_path / "my_tasks" / "my_helpers.py").write_text("def keep(dataset):\n    return dataset\n")
    assert load_suite(_suite(tmp_path)).spec_hash == before


def test_errors_name_the_file_the_key_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_LM_EVAL_PATH, str(tmp_path))
    missing = load_suite(_suite(tmp_path / "a"))  # trusted, but there is no such folder
    (problem,) = check_suite(missing, missing.tasks[1:])
    assert missing.path in problem and "'lm_eval_include_path'" in problem and "no folder at" in problem

    _own_task(tmp_path / "b" / "my_tasks", name="initbench_compare_sums")  # a built-in name, redefined
    clash = load_suite(_suite(tmp_path / "b", task="initbench_compare_sums"))
    (problem,) = check_suite(clash, clash.tasks[1:])
    assert "'tasks[1].lm_eval_task'" in problem and "both built in" in problem and "rename yours" in problem

    (tmp_path / "c" / "my_tasks").mkdir(parents=True)
    (tmp_path / "c" / "my_tasks" / "my_compare.yaml").write_text("include: nowhere.yaml\ntask: my_compare\n")
    broken = load_suite(_suite(tmp_path / "c"))
    (problem,) = check_suite(broken, broken.tasks[1:])
    assert "my_compare.yaml: lm-eval cannot read this task file" in problem and "nowhere.yaml" in problem

    (tmp_path / "d" / "my_tasks").mkdir(parents=True)
    (tmp_path / "d" / "my_tasks" / "my_compare.yaml").write_text(json.dumps({"include": str(TEMPLATE), "task": "x"}))
    renamed = load_suite(_suite(tmp_path / "d"))
    (problem,) = check_suite(renamed, renamed.tasks[1:])
    assert "declares task: 'x', not 'my_compare'" in problem


def test_contributed_results_take_no_folder_of_their_own(tmp_path, monkeypatch):
    _own_task(tmp_path / "my_tasks")
    monkeypatch.setenv(ENV_LM_EVAL_PATH, str(tmp_path))
    problems = contributed_problems(load_suite(_suite(tmp_path)))
    assert any("'lm_eval_include_path'" in p and "does not trust" in p for p in problems)
    assert any("'tasks[1].lm_eval_task'" in p and "my_compare" in p for p in problems)
