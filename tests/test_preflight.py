"""Issue 18, finding 8: `initbench check SUITE` (and evaluate/sweep before their first run) catches
bad input with exit 2 and a line naming the file and the key, before any compute is spent."""

from __future__ import annotations

import pytest

from initbench.cli import main
from initbench.inputs import preflight
from initbench.spec.suite import builtin_suite_dir

SMOKE = (builtin_suite_dir() / "smoke.yaml").read_text()
TARGETS = "target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]"
GENERATOR = (
    "generator: initbench_tasks.generators:addition\n      args: {digits: 1, n_train: 40, n_validation: 8, n_test: 8}"
)

CASES = [  # (what today's main does with it) old text, new text, the key the error must name, a fragment
    # caught only at run time today
    (TARGETS, "target_modules: [q_proj, qq_proj]", "lora.target_modules[1]", "matches no module"),
    (TARGETS, "target_modules: [self_attn]", "lora.target_modules[0]", "LoRA cannot wrap"),
    ("lm_eval_task: initbench_addition", "lm_eval_task: initbench_nope", "tasks[0].lm_eval_task", "nope.yaml"),
    ("generators:addition", "generators:no_such_function", "tasks[0].data.generator", "cannot import"),
    (
        "initbench_tasks.generators:addition",
        "initbench_tasks.no_such_module:addition",
        "tasks[0].data.generator",
        "ModuleNotFoundError",
    ),
    ("n_train: 40, n_validation: 8", "n_train: 40, n_valid: 8", "tasks[0].data.args", "n_valid"),
    (
        GENERATOR,
        "files: {train: /nonexistent/train.jsonl, test: /nonexistent/test.jsonl}",
        "tasks[0].data.files.train",
        "no file at /nonexistent/train.jsonl",
    ),
    ("  id: tiny-llama\n", "  id: tiny-llama\n  dtype: float33\n", "model.dtype", "float33"),
    ("schedule: {name: linear", "schedule: {name: sawtooth", "budget.schedule.name", "sawtooth"),
    ("schedule: {name: linear", "schedule: {name: reduce_lr_on_plateau", "budget.schedule.name", "reduce_lr"),
    ("schedule: {name: linear", "schedule: {name: cosine_with_min_lr", "budget.schedule.name", "min_lr"),
    ("  alpha: 8\n", "  alpha: 8\n  dropout: 2\n", "lora.dropout", "[0, 1)"),
    ("  limit: 8", "  limit: 0", "eval.limit", "positive"),
    ("hidden_size: 32", "hidden_size: 30", "model.tiny.hidden_size", "divisible"),
    ("num_key_value_heads: 2", "num_key_value_heads: 3", "model.tiny.num_attention_heads", "divisible"),
    ("hidden_size: 32", "hiden_size: 32", "model.tiny.hiden_size", "unknown key"),
    # silently accepted today
    ("lr: 0.01}", "lr: .inf}", "budget.optimizer.lr", "finite"),
    ("lr: 0.01}", "lr: .nan}", "budget.optimizer.lr", "finite"),
    ("  alpha: 8\n", "  alpha: 0\n", "lora.alpha", "positive"),
    ("  alpha: 8\n", "  alpha: -8\n", "lora.alpha", "positive"),
    ("eval:\n  batch_size: 8", "eval:\n  batch_size: 0", "eval.batch_size", "positive"),
    ("  rank: 4\n", "  rank: 20\n", "lora.rank", "smaller dimension (16)"),  # k_proj: 32 -> 16
    ("  steps: 6\n", "  steps: 6\n  steps: 600000\n", "line 15", "duplicate key 'steps'"),
]


@pytest.mark.parametrize("old, new, key, fragment", CASES, ids=[c[2] + ":" + c[1][:30] for c in CASES])
def test_check_names_file_and_key_and_exits_2(tmp_path, capsys, old, new, key, fragment):
    assert old in SMOKE
    path = tmp_path / "bad.yaml"
    path.write_text(SMOKE.replace(old, new, 1))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("initbench: error:"))
    assert str(path) in line and key in line and fragment in line, err


def test_check_passes_the_builtin_smoke_suite(capsys):
    assert main(["check", "smoke"]) == 0
    assert "ok: suite 'smoke'" in capsys.readouterr().out


def test_evaluate_and_sweep_run_the_preflight_before_the_first_run(tmp_path, capsys, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text(SMOKE.replace(TARGETS, "target_modules: [q_proj, qq_proj]", 1))
    started = []
    monkeypatch.setattr("initbench.sweeps.sweep._run_batch", lambda *a, **k: started.append(a) or [])
    for command in ("evaluate", "sweep"):
        out = tmp_path / command
        assert main([command, "--suite", str(path), "--method", "lora", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "lora.target_modules[1]" in err and str(path) in err
        assert not started and not out.exists()  # nothing run, nothing written


def test_another_check_plugs_in_with_one_line(monkeypatch, smoke_suite):
    notes = []

    def contamination(suite, tasks, note):
        note(f"{len(tasks)} tasks checked")
        return [f"{suite.path}: key 'tasks[0]': too much overlap"]

    monkeypatch.setattr(preflight, "CHECKS", [*preflight.CHECKS, contamination])
    assert preflight.check_suite(smoke_suite, note=notes.append) == [
        f"{smoke_suite.path}: key 'tasks[0]': too much overlap"
    ]
    assert notes == ["2 tasks checked"]


LOAD_TIME = [
    c
    for c in CASES
    if c[2]
    in ("model.dtype", "lora.dropout", "eval.limit", "budget.optimizer.lr", "lora.alpha", "eval.batch_size", "line 15")
]


@pytest.mark.parametrize("old, new, key, fragment", LOAD_TIME, ids=[c[2] + ":" + c[1][:30] for c in LOAD_TIME])
def test_values_no_run_can_use_are_refused_when_the_suite_loads(tmp_path, old, new, key, fragment):
    # lr .inf / .nan, alpha 0, eval.batch_size 0, a duplicate key (last wins: steps 600000) used to load silently
    from initbench.spec.suite import SuiteError, load_suite

    path = tmp_path / "bad.yaml"
    path.write_text(SMOKE.replace(old, new, 1))
    with pytest.raises(SuiteError) as err:
        load_suite(str(path))
    assert str(path) in str(err.value) and key in str(err.value) and fragment in str(err.value)
