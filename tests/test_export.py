"""Saving a trained run as a plain adapter on the original base model (initbench.run.export): per family of
methods, stock ``PeftModel.from_pretrained`` on the unmodified tiny base reproduces the trained model's
logits; what a LoRA adapter cannot carry is refused."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from _zoo import DEFAULT_BUDGET, attach, base_model, examples, probe_batch
from peft import PeftModel
from safetensors import safe_open

from initbench.api import InitMethod
from initbench.inputs.data import collate
from initbench.run.export import RUN_JSON, ExportError, plain_updates, save_trained
from initbench.run.train import train
from initbench.spec.budget import Spend

TOLERANCE = 1e-4  # float32 logits, trained model vs unmodified base + exported adapter


def _logits(model, batch=None):
    with torch.no_grad():
        return model(**(batch or probe_batch())).logits


def _probe():
    _, tokenizer = base_model()
    batch = collate(examples()[:4], tokenizer.pad_token_id)
    return {key: batch[key] for key in ("input_ids", "attention_mask")}


def _trained(method, steps=6):
    """The tiny model attached, initialized and trained ``steps`` steps at a rate that moves it."""
    model, spend, modified = attach(method)
    _, tokenizer = base_model()
    budget = dataclasses.replace(DEFAULT_BUDGET, steps=steps)
    initial = _logits(model)
    result = train(
        model,
        examples(),
        budget,
        lr=1e-2,
        seed=0,
        pad_id=tokenizer.pad_token_id,
        device=torch.device("cpu"),
        spend=Spend(),
        base_params=1,
    )
    assert result.status == "ok"
    assert (_logits(model) - initial).abs().max() > 1e-3  # training moved it: an export of the init would fail
    return model, modified


def _save(model, folder, original=None):
    _, tokenizer = base_model()
    calls = []

    def load_original():
        calls.append(1)
        return original or base_model()[0]

    record = save_trained(folder, model, tokenizer, load_original, _probe(), {"run_id": "test/run"})
    return record, calls


def _stock(folder):
    """Stock peft on the *unmodified* base model."""
    return PeftModel.from_pretrained(base_model()[0], str(folder)).eval()


@pytest.mark.parametrize(
    "method, family",
    [
        ("lora", "B = 0 at init, base untouched"),
        ("pissa", "residual base"),
        ("lora-xs", "dense middle matrix, frozen A and B"),
        ("loldu", "diagonal middle, residual base"),
    ],
)
def test_stock_peft_on_the_original_base_reproduces_the_trained_model(method, family, tmp_path):
    model, modified = _trained(method)
    record, _ = _save(model, tmp_path / "run.adapter")
    export = record["export"]
    stock = _stock(tmp_path / "run.adapter")
    assert (_logits(model) - _logits(stock)).abs().max() < TOLERANCE, family
    assert export["format"] == "peft-lora" and export["verified_max_abs_logit_diff"] < TOLERANCE
    assert export["layers_svd"] == len(modified)  # SVD exactly where the base weight changed
    if modified:
        assert export["max_rank"] <= 2 * 4  # PiSSA's rank-2r conversion, found by the SVD
        assert export["max_dropped_relative"] <= export["drop_rtol"]
    saved = json.loads((tmp_path / "run.adapter" / RUN_JSON).read_text())
    with safe_open(str(tmp_path / "run.adapter" / "adapter_model.safetensors"), framework="pt") as handle:
        assert json.loads(handle.metadata()["initbench_run"])["run_id"] == saved["run_id"] == "test/run"
    assert saved["export"]["bytes"] == sum(p.stat().st_size for p in (tmp_path / "run.adapter").iterdir())


def test_a_residual_base_saved_as_is_would_not_reproduce_the_model(tmp_path):
    """Why the conversion: peft's own save of a MiLoRA run (its residual written by initbench, not by a peft
    init that ``from_pretrained`` would redo on load), loaded on the original base, is another model."""
    model, _ = _trained("milora")
    model.save_pretrained(tmp_path / "naive")
    assert (_logits(model) - _logits(_stock(tmp_path / "naive"))).abs().max() > 1e-3


def test_a_full_rank_change_of_the_base_exports_at_full_rank(tmp_path):
    """LoftQ (the base replaced by its NF4 round trip): exact, at the full rank of the difference."""
    model, modified = _trained("loftq")
    record, _ = _save(model, tmp_path / "run.adapter")
    assert (_logits(model) - _logits(_stock(tmp_path / "run.adapter"))).abs().max() < TOLERANCE
    assert record["export"]["layers_svd"] == len(modified) == 14
    assert record["export"]["max_rank"] > 2 * 4  # far above the LoRA rank: the quantization residual is full rank


def test_full_fine_tuning_is_saved_as_a_full_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    model, tokenizer = base_model()
    model.requires_grad_(True)
    train(
        model,
        examples(),
        DEFAULT_BUDGET,
        lr=1e-2,
        seed=0,
        pad_id=tokenizer.pad_token_id,
        device=torch.device("cpu"),
        spend=Spend(),
        base_params=1,
    )
    record, calls = _save(model, tmp_path / "run.adapter")
    assert record["export"]["format"] == "full-checkpoint" and not calls  # no original base needed
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run.adapter", dtype=torch.float32).eval()
    assert (_logits(model) - _logits(base_model()[0])).abs().max() > 1e-3
    assert torch.equal(_logits(model), _logits(reloaded))


def test_the_conversion_keeps_trained_factors_where_the_base_is_untouched():
    model, _ = _trained("lora-xs", steps=2)
    original = base_model()[0]
    for update in plain_updates(model, original):
        layer = model.get_submodule("base_model.model." + update.name)
        assert update.how == "factors" and update.rank == 4 and update.scale == layer.scaling["default"]
        assert torch.equal(update.B, layer.lora_B["default"].weight)
        assert torch.equal(update.A, layer.lora_A["default"].weight)  # M @ A: the middle folded into A


def test_a_change_outside_the_lora_layers_is_refused(tmp_path):
    model, _ = _trained("lora", steps=1)
    with torch.no_grad():
        model.base_model.model.model.norm.weight.add_(0.5)
    with pytest.raises(ExportError, match="model.norm.weight differs from the original base model"):
        _save(model, tmp_path / "run.adapter")
    assert not (tmp_path / "run.adapter").exists()


def test_dora_is_refused(tmp_path):
    class DoRA(InitMethod):
        name = "dora"

        def lora_config_kwargs(self, lora):
            return {"init_lora_weights": True, "use_dora": True}

    model, _, _ = attach(DoRA())
    with pytest.raises(ExportError, match="use_dora"):
        _save(model, tmp_path / "run.adapter")


def test_saving_again_replaces_the_folder(tmp_path):
    model, _ = _trained("lora", steps=1)
    folder = tmp_path / "run.adapter"
    folder.mkdir()
    (folder / "stale.bin").write_bytes(b"old")
    _save(model, folder)
    assert not (folder / "stale.bin").exists() and (folder / "adapter_config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["run.adapter"]  # no temporary folder left
