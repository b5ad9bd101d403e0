"""Shared helpers of the baseline-zoo tests: a tiny model, attached the way the harness attaches."""

from __future__ import annotations

import copy
import dataclasses

import torch
from initbench_tasks.generators import addition

from initbench.inputs.data import tokenize_records
from initbench.inputs.models import linear_params, tiny_model
from initbench.method.calibration import Calibrator
from initbench.method.registry import get_method
from initbench.run.attach import attach_and_initialize, lora_settings
from initbench.spec.budget import Budget, CalibrationSpec, Spend
from initbench.spec.suite import LoraSpec

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RANK, ALPHA = 4, 8.0
CALIB = CalibrationSpec(examples=8, batch_size=4)
DEFAULT_BUDGET = Budget(steps=6, batch_size=4, max_length=48, calibration=CALIB)

_BASE = {}


def base_model():
    """A fresh copy of the tiny base model (frozen, eval) and its tokenizer."""
    if "model" not in _BASE:
        model, tokenizer = tiny_model(TINY, torch.float32)
        model.eval().requires_grad_(False)
        _BASE.update(model=model, tokenizer=tokenizer)
    return copy.deepcopy(_BASE["model"]), _BASE["tokenizer"]


def examples():
    _, tokenizer = base_model()
    data = addition(digits=1, n_train=40, n_validation=8, n_test=8)
    return tokenize_records(data["train"], tokenizer, 48)


def lora_for(method, rank=RANK):
    return lora_settings(LoraSpec(rank=rank, alpha=ALPHA, target_modules=list(TARGETS)), method)


def attach(method, *, seed=0, calib=CALIB, rank=RANK, budget=None, lr=None):
    """(peft model, spend, modified layers) exactly as the harness builds them (``budget`` and ``lr``
    reach the method as ``ctx.budget``/``ctx.lr``, as ``run_one`` passes them)."""
    if isinstance(method, str):
        method = get_method(method)
    model, tokenizer = base_model()
    spend = Spend()
    model, modified = attach_and_initialize(
        model,
        tokenizer,
        method,
        lora_for(method, rank),
        seed=seed,
        examples=examples(),
        budget=dataclasses.replace(budget or DEFAULT_BUDGET, calibration=calib),
        lr=(budget or DEFAULT_BUDGET).optimizer.lr if lr is None else lr,
        spend=spend,
        base_params=linear_params(model),
        device=torch.device("cpu"),
    )
    return model, spend, modified


def calibrator(model, seed=0, calib=CALIB):
    """A Calibrator over the same examples, for re-running a method's calibration by hand."""
    _, tokenizer = base_model()
    return Calibrator(
        model, examples(), calib, Spend(), linear_params(model), seed, tokenizer.pad_token_id, torch.device("cpu")
    )


def probe_batch():
    _, tokenizer = base_model()
    ids = tokenizer(
        ["7+8=15", "Which is larger: 3+4 or 9+1?"], padding=True, return_tensors="pt", add_special_tokens=False
    )
    return {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]}


def lora_tensors(model) -> dict[str, torch.Tensor]:
    """Every LoRA factor and every targeted base weight, keyed by name without the peft prefix."""
    out = {}
    for name, tensor in model.state_dict().items():
        if "lora_" in name or (name.endswith("base_layer.weight")):
            out[name.replace("base_model.model.", "")] = tensor.detach().clone()
    return out
