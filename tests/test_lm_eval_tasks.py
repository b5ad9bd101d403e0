"""The shipped lm-eval task YAMLs: one multiple-choice template plus per-task files that include it,
resolved by initbench exactly as lm-eval's own TaskManager resolves them (issue 15 item 4)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from initbench.board.share import _Dumper, standalone_task
from initbench.inputs.data import TaskData
from initbench.inputs.evaluation import task_config, task_yaml_path
from initbench.spec.suite import SuiteError, builtin_suite_dir

LM_EVAL_DIR = builtin_suite_dir() / "lm_eval"
TEMPLATE = "_initbench_mc_template.yaml"
#: one record every shipped task can read (generation, teacher forcing, multiple choice, GSM8K)
RECORD = {"prompt": "Question: 1+1?\nAnswer:", "completion": " 2", "choices": ["1", "2"], "label": 1, "target": "2"}


def _task_names() -> list[str]:
    return sorted(p.stem for p in LM_EVAL_DIR.glob("*.yaml") if p.name != TEMPLATE)


def _data(tmp_path) -> TaskData:
    files = {}
    for split in ("test", "validation"):
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text(json.dumps(RECORD) + "\n")
    return TaskData(files, "test-data")


def _manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(LM_EVAL_DIR)], include_defaults=False)


def test_the_multiple_choice_tasks_are_one_template_and_includes():
    from lm_eval.tasks._yaml_loader import load_yaml

    raw = {p.stem: load_yaml(p, resolve_func=False, recursive=False) for p in LM_EVAL_DIR.glob("*.yaml")}
    including = sorted(name for name, config in raw.items() if config.get("include") == TEMPLATE)
    assert including == [
        f"initbench_{t}"
        for t in ("arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "siqa", "winogrande")
    ]
    for name in including:  # each adds its name and nothing else
        assert raw[name] == {"include": TEMPLATE, "task": name}


def test_lm_eval_registers_every_task_file_and_not_the_template(tmp_path):
    manager = _manager()
    assert manager.all_subtasks == _task_names()  # the template has no `task:`: lm-eval skips it
    for name in manager.all_subtasks:
        assert manager.task_index[name].yaml_path.resolve() == task_yaml_path(name).resolve()
    with pytest.raises(SuiteError, match=r"_initbench_mc_template.yaml: no 'task:' key.*include"):
        task_config("_initbench_mc_template", _data(tmp_path))


def test_initbench_resolves_each_task_as_lm_eval_does(tmp_path):
    """initbench hands lm-eval a resolved config (``task_config``); lm-eval resolving the same task by name
    from its include_path, with only the data files overridden (a group entry), must build the same task."""
    data, manager = _data(tmp_path), _manager()
    for name in _task_names():
        ours = task_config(name, data)
        theirs = {"group": "check", "task": [{"task": name, "dataset_kwargs": ours["dataset_kwargs"]}]}
        built = [manager.load([spec])["tasks"][name] for spec in (ours, theirs)]
        configs = [dataclasses.asdict(task.config) for task in built]
        for config in configs:
            config["metadata"].pop("config_source")  # "inline" for ours, the YAML's path for lm-eval's
        assert configs[0] == configs[1], name
        docs = [list(task.test_docs()) for task in built]
        assert docs[0] == docs[1] and len(docs[0]) == 1


def test_the_export_writes_each_task_standalone_as_lm_eval_resolves_it(tmp_path):
    """``initbench export`` writes the include-merged task (``share.standalone_task``); lm-eval reading
    that copy gets what it gets from the original, functions included."""
    from lm_eval.tasks._yaml_loader import load_yaml

    for name in _task_names():
        source = task_yaml_path(name)
        config, helpers = standalone_task(source)
        assert "include" not in config and config["task"] == name
        copy = tmp_path / name / source.name
        copy.parent.mkdir()
        copy.write_text(yaml.dump(config, Dumper=_Dumper, sort_keys=False))
        for relative, module in helpers.items():
            (copy.parent / relative).write_bytes(module.read_bytes())
        exported, original = load_yaml(copy), load_yaml(source)
        assert exported.keys() == original.keys(), name
        for key in original:
            if callable(original[key]) or key == "metric_list":  # functions: same module and name, another file
                assert _named(exported[key]) == _named(original[key]), (name, key)
            else:
                assert exported[key] == original[key], (name, key)


def _named(node):
    if callable(node):
        return node.__module__.rpartition("/")[2], node.__name__
    if isinstance(node, list):
        return [_named(n) for n in node]
    if isinstance(node, dict):
        return {k: _named(v) for k, v in node.items()}
    return node
