"""Training reuse: a run restoring an earlier run's training scores and curves bit for bit like training;
the entry is keyed by the rate, the seed and the execution settings; full-ft stores nothing; a bad
entry trains."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from initbench.method.registry import get_method
from initbench.run.harness import run_one
from initbench.run.init_cache import cache_folder
from initbench.run.train_cache import FOLDER, train_key
from initbench.selection.counted import read_results
from initbench.spec.suite import load_suite
from initbench.store.results import CURVE_SUFFIX
from initbench.sweeps.executors import InlineExecutor
from initbench.sweeps.sweep import run_sweep

#: what differs between two computations of the same run (timings) or says how it was computed
NOT_COMPARED = (
    "init_seconds",
    "train_seconds",
    "eval_seconds",
    "wall_seconds",
    "start_time",
    "peak_memory_bytes",
    "train_tokens_per_second",
    "mfu",
    "init_reused",
    "train_reused",
)


def _entries(out) -> list:
    return sorted((cache_folder(out) / FOLDER).glob("*.pt"))


def _train_reused(outcome) -> bool:
    return pq.read_table(outcome.path).column("train_reused").to_pylist()[0]


def _dropout_suite(tmp_path):
    """`smoke` cut to one task and 2 steps, with LoRA dropout (so training draws from the RNG)."""
    from conftest import quick_smoke_suite

    path = quick_smoke_suite(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["lora"]["dropout"] = 0.1
    path.write_text(yaml.safe_dump(spec))
    return load_suite(str(path))


def _sweep(suite, out) -> tuple[dict[str, dict], dict[str, list]]:
    run_sweep(
        suite,
        [get_method("lora"), get_method("pissa")],
        [0, 1],
        out,
        InlineExecutor(),
        protocol="tuned",
        report=lambda line: None,
    )
    rows = {(r["run_id"], r["metric"]): r for r in read_results(out).to_pylist()}
    curves: dict[str, list] = {}
    for point in read_results(out, CURVE_SUFFIX).to_pylist():
        curves.setdefault(point["run_id"], []).append((point["step"], point["loss"], point["lr"], point["tokens"]))
    return rows, curves


def test_a_tuned_sweep_reusing_trainings_is_bit_identical_to_training_each_run(tmp_path, monkeypatch):
    suite = _dropout_suite(tmp_path)
    monkeypatch.setenv("INITBENCH_DIAGNOSTICS", "1")  # columns computed from the trained weights, to the last bit
    monkeypatch.setenv("INITBENCH_INIT_REUSE", "0")
    plain_rows, plain_curves = _sweep(suite, tmp_path / "plain")
    monkeypatch.setenv("INITBENCH_INIT_REUSE", "1")
    rows, curves = _sweep(suite, tmp_path / "reuse")

    assert rows.keys() == plain_rows.keys() and curves == plain_curves
    for key, row in rows.items():
        assert {k: v for k, v in row.items() if k not in NOT_COMPARED} == {
            k: v for k, v in plain_rows[key].items() if k not in NOT_COMPARED
        }, key
    assert not any(r["train_reused"] for r in plain_rows.values())
    assert all(r["final_update_erank"] is not None for r in rows.values() if r["status"] == "ok")
    by_run = {r["run_id"]: r for r in rows.values()}
    for method in ("lora", "pissa"):
        runs = {
            (r["learning_rate"], r["seed"], r["eval_split"], r["protocol"]): r
            for r in by_run.values()
            if r["method"] == method
        }
        default, tuned = suite.budget.optimizer.lr, {r["selected_lr"] for r in runs.values() if r["selected_lr"]}
        assert not any(r["train_reused"] for (_, _, split, _), r in runs.items() if split == "validation")
        fixed0, trial = runs[(default, 0, "test", "fixed")], runs[(default, 0, "validation", "tuned")]
        assert fixed0["train_reused"] and not runs[(default, 1, "test", "fixed")]["train_reused"]
        assert fixed0["train_seconds"] == trial["train_seconds"]  # the original's cost, not the restore's
        (chosen,) = tuned
        assert runs[(chosen, 0, "test", "tuned")]["train_reused"]  # seed 0 is the tuning seed
        assert runs[(chosen, 1, "test", "tuned")]["train_reused"] == (chosen == default)
    assert not cache_folder(tmp_path / "reuse").exists()  # the sweep cleans up


def test_the_entry_is_keyed_by_rate_and_seed(smoke_suite, tmp_path):
    task, method = smoke_suite.tasks[0], get_method("lora")
    first = run_one(smoke_suite, method, task, 0, tmp_path, lr=0.01, split="validation")
    assert first.status == "ok" and not _train_reused(first) and len(_entries(tmp_path)) == 1
    other_rate = run_one(smoke_suite, method, task, 0, tmp_path, lr=0.1, split="validation")
    other_seed = run_one(smoke_suite, method, task, 1, tmp_path, lr=0.01, split="validation")
    assert not _train_reused(other_rate) and not _train_reused(other_seed)
    assert other_rate.scores != first.scores or _curve(other_rate) != _curve(first)
    assert len(_entries(tmp_path)) == 3
    final = run_one(smoke_suite, method, task, 0, tmp_path, lr=0.01)  # the same training, scored on test
    assert _train_reused(final) and _curve(final) == _curve(first)


def _curve(outcome) -> list[float]:
    return pq.read_table(str(outcome.path).replace(".results.", ".curve.")).column("loss").to_pylist()


@pytest.mark.parametrize(
    "env, value", [("INITBENCH_PRECISION", "bf16-autocast"), ("INITBENCH_COMPILE", "1"), ("INITBENCH_FAST", "1")]
)
def test_the_key_covers_the_execution_settings_that_change_training(env, value, monkeypatch):
    cpu = torch.device("cpu")
    plain = train_key("k", 0.01, cpu)
    assert plain != train_key("k", 0.02, cpu) and plain != train_key("other", 0.01, cpu)
    monkeypatch.setenv(env, value)
    assert train_key("k", 0.01, cpu) != plain


def test_full_fine_tuning_stores_nothing(smoke_suite, tmp_path):
    outcome = run_one(
        smoke_suite, get_method("full-ft"), smoke_suite.tasks[0], 0, tmp_path, lr=0.01, split="validation"
    )
    assert outcome.status == "ok", outcome.error
    assert not _train_reused(outcome) and not _entries(tmp_path)


@pytest.mark.parametrize("content", [b"not a torch file", "a dict of another shape"])
def test_an_unreadable_entry_trains(content, smoke_suite, tmp_path):
    task, method = smoke_suite.tasks[0], get_method("lora")
    first = run_one(smoke_suite, method, task, 0, tmp_path, lr=0.01, split="validation")
    (entry,) = _entries(tmp_path)
    if isinstance(content, bytes):
        entry.write_bytes(content)
    else:
        torch.save({"params": 1}, entry)  # no structure: a KeyError inside
    final = run_one(smoke_suite, method, task, 0, tmp_path, lr=0.01)
    assert final.status == "ok" and not _train_reused(final) and _curve(final) == _curve(first)
    again = run_one(smoke_suite, method, task, 0, tmp_path, lr=0.01, split="validation", force=True)
    assert _train_reused(again)  # the final wrote a good entry back
