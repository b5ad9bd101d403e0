"""Suite YAML: built-ins load, bad input is named by file, key and expected type."""

from __future__ import annotations

import dataclasses

import pytest

from initbench.spec.suite import SuiteError, builtin_suite_dir, list_suites, load_suite

SMOKE = (builtin_suite_dir() / "smoke.yaml").read_text()


def test_builtin_suites_load():
    names = {p.stem for p in list_suites()}
    assert {"mini", "smoke"} <= names
    for path in list_suites():
        suite = load_suite(str(path))
        assert suite.tasks and suite.budget.steps > 0


def test_found_by_name_or_path(tmp_path):
    copy = tmp_path / "mine.yaml"
    copy.write_text(SMOKE)
    assert load_suite("smoke").spec_hash == load_suite(str(copy)).spec_hash


def test_spec_hash_tracks_what_affects_results(smoke_suite):
    assert smoke_suite.spec_hash == load_suite("smoke").spec_hash
    longer = dataclasses.replace(smoke_suite, budget=dataclasses.replace(smoke_suite.budget, steps=7))
    assert longer.spec_hash != smoke_suite.spec_hash
    reworded = dataclasses.replace(smoke_suite, description="other words")
    assert reworded.spec_hash == smoke_suite.spec_hash


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("  rank: 4\n", "  rank: four\n", ["lora.rank", "int", "'four'"]),
        ("  rank: 4\n", "  rank: true\n", ["lora.rank", "int"]),
        ("  steps: 6\n", "  steps: 6\n  stepz: 7\n", ["unknown key 'budget.stepz'"]),
        ("  batch_size: 4\n  max_length", "  max_length", ["missing required key 'budget.batch_size'"]),
        ("  steps: 6\n", "  steps: 0\n", ["budget.steps", "positive"]),
        (
            "  target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]",
            "  target_modules: q_proj",
            ["lora.target_modules", "must be a list"],
        ),
        ("source: tiny", "source: cloud", ["model.source", "embedded, hub, tiny"]),
        ("lm_eval_task: initbench_addition", "lm_eval_task: [1]", ["tasks[0].lm_eval_task", "str"]),
        ("optimizer: {name: adamw", "optimizer: {name: lion", ["budget.optimizer.name"]),
        ("  limit: 8\n", "  limit: eight\n", ["eval.limit", "int", "'eight'"]),  # an optional key
    ],
)
def test_bad_fields_are_named(tmp_path, old, new, expected):
    assert old in SMOKE
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.replace(old, new, 1))
    with pytest.raises(SuiteError) as err:
        load_suite(str(bad))
    message = str(err.value)
    assert str(bad) in message
    for fragment in expected:
        assert fragment in message


def test_malformed_yaml_and_unknown_names(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SuiteError, match="not valid YAML"):
        load_suite(str(broken))
    with pytest.raises(SuiteError, match="unknown suite 'nope'.*mini"):
        load_suite("nope")
    with pytest.raises(SuiteError, match="not found"):
        load_suite(str(tmp_path / "absent.yaml"))


def test_builtin_name_wins_over_a_results_folder_of_the_same_name(tmp_path, monkeypatch):
    # `initbench evaluate --suite mini --out mini` run twice from one folder: the second call must
    # still find the built-in suite, not try to read the results folder ./mini as YAML.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mini").mkdir()
    assert load_suite("mini").name == "mini"
