"""Adapters out, end to end (issue 16): ``--save-adapters`` / the suite's ``save_adapters`` keep each final
run's adapter (also when its training is restored from the training cache); ``initbench export`` writes a
folder that the *stock* lm-eval command in its README scores at the run's recorded value; ``--push-to-hub``
goes through the hub client; ``initbench model-path`` gives the base model as a folder."""

from __future__ import annotations

import inspect
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import cli_env, quick_smoke_suite

from initbench.cli import main
from initbench.run.export import RUN_JSON, saved_folder
from initbench.spec.suite import load_suite
from initbench.store.results import RESULTS_SUFFIX, read_file, run_stem

TASK = "initbench_addition_tf"  # continuous scores (gold_prob) and a `!function` helper to carry along


def _suite(folder: Path, **top) -> Path:
    """`smoke` cut to addition scored by teacher forcing, 4 steps, 8 test examples."""
    path = quick_smoke_suite(folder, steps=4, limit=8)
    spec = yaml.safe_load(path.read_text())
    spec["tasks"][0]["lm_eval_task"] = TASK
    spec.update(top)
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def pissa_run(tmp_path_factory):
    """One PiSSA run (the residual-base export) evaluated with --save-adapters: (suite path, results file)."""
    folder = tmp_path_factory.mktemp("pissa-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INITBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "initbench-cache"))
        suite = _suite(folder)
        assert (
            main(
                [
                    "evaluate",
                    "--suite",
                    str(suite),
                    "--method",
                    "pissa",
                    "--seeds",
                    "0",
                    "--save-adapters",
                    "--out",
                    str(folder / "runs"),
                ]
            )
            == 0
        )
    (results,) = (folder / "runs").rglob(f"*{RESULTS_SUFFIX}")
    return suite, results


def _stem(results: Path) -> Path:
    return Path(str(results)[: -len(RESULTS_SUFFIX)])


def _row(results: Path) -> dict:
    return {r["metric"]: r for r in read_file(results).to_pylist()}


def test_stock_lm_eval_scores_the_export_at_the_value_the_run_recorded(pissa_run, tmp_path, capsys):
    suite, results = pissa_run
    assert main(["export", str(results), "--to", str(tmp_path / "export")]) == 0
    printed = capsys.readouterr().out
    export = tmp_path / "export"
    readme = (export / "README.md").read_text()
    command = printed.strip().splitlines()[-1]
    assert command in readme and f"peft=.,dtype=float32 --tasks {TASK}" in command
    assert {"adapter_config.json", "adapter_model.safetensors", RUN_JSON, "README.md", "lm_eval_task"} <= {
        p.name for p in export.iterdir()
    }
    assert (export / "lm_eval_task" / "initbench_scores.py").is_file()  # the task's `!function` helper
    record = json.loads((export / RUN_JSON).read_text())
    assert f"{record['export']['bytes']:,} bytes" in readme

    folder, stock = command.split(" && ", 1)
    argv = shlex.split(stock)
    assert argv[0] == "lm_eval" and folder == f"cd {export.resolve()}"
    env = {**cli_env(), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "ds")}
    done = subprocess.run(
        [sys.executable, "-m", "lm_eval", *argv[1:], "--output_path", str(tmp_path / "lm-eval")],
        cwd=export,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (written,) = (tmp_path / "lm-eval").rglob("results_*.json")
    scored = json.loads(written.read_text())["results"][TASK]
    recorded = _row(results)
    assert recorded["gold_prob"]["value"] > 0
    assert scored["gold_prob,none"] == pytest.approx(recorded["gold_prob"]["value"], abs=1e-5)
    assert scored["greedy_match,none"] == recorded["greedy_match"]["value"]


def test_push_to_hub_uploads_the_export_through_the_hub_client(pissa_run, tmp_path, monkeypatch, capsys):
    """The same code path as online, with huggingface_hub's client replaced by a local copy (no network); the
    calls are bound to the real ``HfApi`` signatures, so a wrong argument fails here too."""
    from huggingface_hub import HfApi

    hub = tmp_path / "hub"

    class LocalHub:
        def create_repo(self, **kwargs):
            inspect.signature(HfApi.create_repo).bind(self, **kwargs)
            (hub / kwargs["repo_id"]).mkdir(parents=True, exist_ok=kwargs["exist_ok"])

        def upload_folder(self, **kwargs):
            inspect.signature(HfApi.upload_folder).bind(self, **kwargs)
            shutil.copytree(kwargs["folder_path"], hub / kwargs["repo_id"], dirs_exist_ok=True)
            return f"local://{kwargs['repo_id']}"

    monkeypatch.setattr("initbench.board.share.hub_api", LocalHub)
    _, results = pissa_run
    assert main(["export", str(results), "--push-to-hub", "me/pissa-addition"]) == 0  # no --to: a temporary folder
    assert "pushed to local://me/pissa-addition" in capsys.readouterr().out
    repo = hub / "me" / "pissa-addition"
    assert {"adapter_config.json", "adapter_model.safetensors", RUN_JSON, "README.md"} <= {
        p.name for p in repo.iterdir()
    }
    assert (repo / "README.md").read_text().startswith("---\nlibrary_name: peft\n")


def test_export_refuses_what_it_cannot_stand_behind(pissa_run, tmp_path, capsys):
    suite, results = pissa_run
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main(["export", str(results), "--to", str(tmp_path / "full")]) == 2
    assert "is not an empty folder" in capsys.readouterr().err

    copy = tmp_path / "copy"  # the same run's files, its saved record from other code
    stem = _stem(results)
    shutil.copytree(stem.parent, copy)
    record = json.loads((copy / saved_folder(stem).name / RUN_JSON).read_text())
    record["code_hash"] = "0" * 16
    (copy / saved_folder(stem).name / RUN_JSON).write_text(json.dumps(record))
    assert main(["export", str(copy / results.name), "--to", str(tmp_path / "a")]) == 2
    assert "saved by another computation of this run (code_hash" in capsys.readouterr().err

    shutil.rmtree(copy / saved_folder(stem).name)
    assert main(["export", str(copy / results.name), "--to", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "no saved adapter" in err and "rerun it with --save-adapters" in err


def test_a_restored_training_still_saves_and_trials_save_nothing(tmp_path, monkeypatch):
    """A tuned final whose training is restored from its trial (train_cache) saves the same adapter as one
    trained afresh; the trial itself saves none."""
    from initbench.method.registry import get_method
    from initbench.run.harness import run_one

    suite = load_suite(str(_suite(tmp_path)))
    task, method, lr = suite.tasks[0], get_method("lora"), 0.02
    final = {"lr": lr, "protocol": "tuned", "selected_lr": lr, "save_adapters": True}
    assert (
        run_one(suite, method, task, 0, tmp_path / "reuse", lr=lr, split="validation", save_adapters=True).status
        == "ok"
    )
    assert run_one(suite, method, task, 0, tmp_path / "reuse", **final).status == "ok"
    monkeypatch.setenv("INITBENCH_INIT_REUSE", "0")
    assert run_one(suite, method, task, 0, tmp_path / "fresh", **final).status == "ok"

    trial = run_stem(tmp_path / "reuse", suite.name, "lora", task.name, 0, suite.spec_hash, lr=lr, split="validation")
    assert not saved_folder(trial).exists()
    stems = {
        out: run_stem(tmp_path / out, suite.name, "lora", task.name, 0, suite.spec_hash, lr=lr)
        for out in ("reuse", "fresh")
    }
    reused = [
        pq.read_table(s.with_name(s.name + RESULTS_SUFFIX)).column("train_reused")[0].as_py() for s in stems.values()
    ]
    assert reused == [True, False]
    from safetensors.torch import load_file

    tensors = {out: load_file(saved_folder(s) / "adapter_model.safetensors") for out, s in stems.items()}
    assert tensors["reuse"].keys() == tensors["fresh"].keys()
    assert all(torch.equal(tensors["reuse"][k], tensors["fresh"][k]) for k in tensors["fresh"])


def test_the_suite_option_saves_without_changing_the_spec_hash(tmp_path, capsys):
    """``save_adapters: true`` in a suite saves like the flag and leaves the spec hash; a run finished before
    adapters were asked for is named after the sweep."""
    plain = load_suite(str(_suite(tmp_path)))
    (tmp_path / "saving").mkdir()
    saving_path = _suite(tmp_path / "saving", save_adapters=True)
    assert load_suite(str(saving_path)).save_adapters and not plain.save_adapters
    assert load_suite(str(saving_path)).spec_hash == plain.spec_hash

    out = tmp_path / "runs"
    assert main(["evaluate", "--suite", plain.path, "--method", "lora", "--method", "base", "--out", str(out)]) == 0
    assert not list(out.rglob("*.adapter"))
    capsys.readouterr()
    assert (
        main(["evaluate", "--suite", str(saving_path), "--method", "lora", "--method", "base", "--out", str(out)]) == 0
    )
    assert (
        "1 final run(s) finished before adapters were saved" in capsys.readouterr().err
    )  # lora's; base trains nothing
    assert main(["evaluate", "--suite", str(saving_path), "--method", "lora", "--out", str(out), "--force"]) == 0
    (saved,) = out.rglob("*.adapter")
    assert json.loads((saved / RUN_JSON).read_text())["method"] == "lora"


def test_sweep_workers_get_the_flag(tmp_path):
    from initbench.method.registry import get_method
    from initbench.sweeps.sweep import RunSpec, execute_run, grid

    suite = load_suite(str(_suite(tmp_path)))
    specs = grid(suite, [get_method("lora")], [0], tmp_path / "runs", save_adapters=True)
    assert specs and all(s.save_adapters for s in specs)
    spec = RunSpec.from_json(specs[0].to_json())  # what a worker process receives
    assert spec.save_adapters and execute_run(spec)["status"] == "ok"
    assert (saved_folder(spec.stem(suite)) / "adapter_config.json").is_file()
    assert not RunSpec.from_json(
        json.dumps({k: v for k, v in json.loads(spec.to_json()).items() if k != "save_adapters"})
    ).save_adapters  # older specs: off


def test_model_path_gives_the_tiny_base_model_as_a_folder(smoke_suite, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from initbench.inputs.models import tiny_model

    assert main(["model-path", "smoke"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    model, tokenizer = tiny_model(smoke_suite.model.tiny, torch.float32)
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    text = "Which is larger: 3+4 or 9+1?"
    assert AutoTokenizer.from_pretrained(folder)(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert main(["model-path", "smoke"]) == 0 and Path(capsys.readouterr().out.strip()) == folder  # written once
