"""The harness on the tiny `smoke` suite: seeding, recording, failures kept to their run."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from initbench.api import InitMethod
from initbench.method.registry import get_method
from initbench.run.harness import run_one
from initbench.selection.counted import read_results
from initbench.store.results import CURVE_SUFFIX


def _run(suite, method, seed, out, task=0):
    outcome = run_one(suite, method, suite.tasks[task], seed, out)
    assert outcome.status in ("ok", "diverged", "failed")
    table = pq.read_table(outcome.path).to_pylist()
    curve = pq.read_table(str(outcome.path).replace(".results.parquet", CURVE_SUFFIX)).to_pylist()
    return outcome, table, curve


def test_same_seed_is_bit_identical_and_seeds_differ(smoke_suite, tmp_path):
    lora = get_method("lora")
    first, rows_a, curve_a = _run(smoke_suite, lora, 0, tmp_path / "a", task=1)
    again, rows_b, curve_b = _run(smoke_suite, lora, 0, tmp_path / "b", task=1)
    other, rows_c, curve_c = _run(smoke_suite, lora, 1, tmp_path / "c", task=1)
    assert first.status == again.status == other.status == "ok"
    assert [r["value"] for r in rows_a] == [r["value"] for r in rows_b]
    assert [p["loss"] for p in curve_a] == [p["loss"] for p in curve_b]
    assert [p["loss"] for p in curve_a] != [p["loss"] for p in curve_c]
    assert rows_a[0]["config_hash"] == rows_b[0]["config_hash"] != rows_c[0]["config_hash"]


def test_result_rows_record_budget_versions_and_base_changes(smoke_suite, tmp_path):
    budget = smoke_suite.budget
    _, lora_rows, curve = _run(smoke_suite, get_method("lora"), 0, tmp_path)
    _, pissa_rows, _ = _run(smoke_suite, get_method("pissa"), 0, tmp_path)
    row = lora_rows[0]
    assert row["status"] == "ok" and row["metric"] == "exact_match"
    assert row["optimizer_steps"] == budget.steps == len(curve)
    assert 0 < row["train_tokens"] <= budget.max_train_tokens
    assert row["flops"] > 0 and row["peak_memory_bytes"] > 0 and row["wall_seconds"] > 0
    assert row["trainable_params"] > 0 and row["lora_scale"] == pytest.approx(8 / 4)
    assert row["calibration_examples"] == 0  # lora needs no data
    assert row["torch_version"] and row["peft_version"] and row["lm_eval_version"] and row["device"] == "cpu"
    assert row["data_hash"] and row["eval_batch_size"] == smoke_suite.eval.batch_size
    assert not row["base_weights_modified"]
    n_targets = 7 * 2  # 7 module types x 2 layers of the tiny model
    assert pissa_rows[0]["base_weights_modified"] and pissa_rows[0]["modified_layers"] == n_targets
    assert pissa_rows[0]["lora_alpha"] == smoke_suite.lora.rank  # PiSSA's alpha = r convention


class Exploding(InitMethod):
    summary = "raises on purpose"

    def initialize(self, model, ctx):
        raise ValueError("boom at layer 3")


def test_a_method_that_raises_is_recorded_and_named(smoke_suite, tmp_path):
    method = Exploding()
    method.name = "exploding"
    outcome, rows, curve = _run(smoke_suite, method, 0, tmp_path)
    assert outcome.status == "failed" and curve == []
    assert rows[0]["error"] == (
        f"method 'exploding' ({Exploding.__module__}:Exploding) raised in initialize: ValueError: boom at layer 3"
    )
    # another method's results in the same folder are untouched and the table reads both
    ok = run_one(smoke_suite, get_method("lora"), smoke_suite.tasks[0], 0, tmp_path)
    assert ok.status == "ok"
    assert sorted(read_results(tmp_path).column("status").to_pylist()) == ["failed", "ok"]


def test_finished_runs_are_skipped_unless_forced(smoke_suite, tmp_path):
    lora = get_method("lora")
    first = run_one(smoke_suite, lora, smoke_suite.tasks[0], 0, tmp_path)
    mtime = first.path.stat().st_mtime_ns
    assert run_one(smoke_suite, lora, smoke_suite.tasks[0], 0, tmp_path).status == "skipped"
    assert first.path.stat().st_mtime_ns == mtime
    assert run_one(smoke_suite, lora, smoke_suite.tasks[0], 0, tmp_path, force=True).status == "ok"
    assert first.path.stat().st_mtime_ns != mtime


def test_base_model_is_loaded_once_and_nothing_leaks_between_runs(smoke_suite, tmp_path, monkeypatch):
    """One model per process, lent to one run at a time: LoRA gives it back pristine (kept, not
    reloaded); PiSSA rewrites base weights (dropped, reloaded); a LoRA run after PiSSA scores and
    trains bit for bit like one in a fresh folder and process state."""
    from initbench.core.seeding import pick_device
    from initbench.run import lending
    from initbench.run.fingerprints import fingerprints

    loads = []
    real_load = lending.load_model
    monkeypatch.setattr(lending, "load_model", lambda *a: loads.append(1) or real_load(*a))
    monkeypatch.setattr(lending, "_BASE_MODELS", {})
    task, lora = smoke_suite.tasks[0], get_method("lora")
    first = run_one(smoke_suite, lora, task, 0, tmp_path / "a")
    device = pick_device()
    loaded = lending.base_model(smoke_suite, device)
    pristine = fingerprints(loaded.model)
    assert lending.return_base_model(loaded, loaded.model)
    run_one(smoke_suite, get_method("lora"), task, 1, tmp_path / "a")
    on_kept = run_one(smoke_suite, lora, task, 0, tmp_path / "b")
    assert len(loads) == 1  # lora left it pristine: kept, not copied, not reloaded
    run_one(smoke_suite, get_method("pissa"), task, 0, tmp_path / "a")
    after_pissa = run_one(smoke_suite, lora, task, 0, tmp_path / "c")
    assert len(loads) == 2  # pissa changed the base weights: dropped and reloaded
    for again in (on_kept, after_pissa):
        assert again.scores == first.scores
        curves = [
            pq.read_table(str(o.path).replace(".results.", ".curve.")).column("loss").to_pylist()
            for o in (first, again)
        ]
        assert curves[0] == curves[1]
    model = lending.base_model(smoke_suite, device).model
    assert fingerprints(model) == pristine
    assert not any(p.requires_grad for p in model.parameters())
    assert not any("lora" in name for name, _ in model.named_modules())
