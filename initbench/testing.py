"""Unit-test an init method in a few lines: a tiny random model, attached and calibrated by the
harness's own code (``initbench.run.attach``: ``attach_lora``, ``init_context``), on CPU, in about a second.

    from initbench.testing import context, initialize

    def test_my_init_writes_orthogonal_A():
        model, ctx = context(MyInit(), rank=4)        # LoRA attached, nothing initialized yet
        MyInit().initialize(model, ctx)               # call the hook yourself ...
        for layer in ctx.layers():                    # one LayerView per targeted layer
            assert torch.allclose(layer.A @ layer.A.T, torch.eye(4), atol=1e-5)

    def test_my_init_through_the_harness():
        done = initialize(MyInit())                   # ... or the harness's exact path
        assert done.spend.calibration_examples <= 8   # what it charged, and which base layers changed
        assert done.modified == []

The model is a 2-layer Llama (hidden 32, vocabulary of single characters) with random weights
drawn from a fixed seed; calibration data are one-digit additions from the built-in generator.
Budget, rate, rank, alpha, targets, seed and the calibration allowance are arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from initbench.method.api import InitContext, InitMethod
from initbench.spec.budget import Budget, CalibrationSpec, Spend
from initbench.spec.suite import LoraSpec

#: the tiny Llama's shape (``initbench.inputs.models.tiny_model``)
TINY_SHAPE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
#: every linear layer of a Llama block, what the built-in suites target
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: a small budget: 6 steps of 4 examples of at most 48 tokens; 8 calibration examples in batches of 4
BUDGET = Budget(steps=6, batch_size=4, max_length=48, calibration=CalibrationSpec(examples=8, batch_size=4))


@dataclass
class Initialized:
    """What ``initialize`` returns: the peft model, the budget spent, the base layers changed."""

    model: torch.nn.Module
    spend: Spend
    modified: list[str] = field(default_factory=list)


def tiny_base(seed: int = 0) -> tuple[torch.nn.Module, object]:
    """A fresh tiny Llama (float32, eval mode, frozen) and its tokenizer; weights drawn from ``seed``."""
    from initbench.inputs.models import tiny_model

    model, tokenizer = tiny_model({**TINY_SHAPE, "init_seed": seed}, torch.float32)
    return model.eval().requires_grad_(False), tokenizer


def calibration_examples(tokenizer: object, n: int = 40, max_length: int = 48) -> list[dict[str, list[int]]]:
    """``n`` tokenized one-digit additions (the ``train`` split of the built-in generator)."""
    from initbench_tasks.generators import addition

    from initbench.inputs.data import tokenize_records

    records = addition(digits=1, n_train=n, n_validation=1, n_test=1)["train"]
    return tokenize_records(records, tokenizer, max_length)


def _base_and_lora(method: InitMethod, rank: int, alpha: float, targets: tuple[str, ...], family: str):
    """The tiny base, its tokenizer, the run's LoRA settings for ``method``, the base's linear parameters."""
    from initbench.inputs.models import linear_params
    from initbench.run.attach import lora_settings

    model, tokenizer = tiny_base()
    lora = lora_settings(LoraSpec(rank=rank, alpha=alpha, target_modules=list(targets)), method, family)
    return model, tokenizer, lora, linear_params(model)


def context(
    method: InitMethod,
    *,
    rank: int = 4,
    alpha: float = 8.0,
    targets: tuple[str, ...] = ALL_LINEAR,
    seed: int = 0,
    budget: Budget = BUDGET,
    lr: float | None = None,
    family: str = "",
    spend: Spend | None = None,
) -> tuple[torch.nn.Module, InitContext]:
    """The peft model with LoRA attached as a run attaches it (the method's ``lora_config_kwargs``, its
    alpha convention, peft's init seeded by ``seed``) and the ``InitContext`` a run hands
    ``initialize``; ``initialize`` itself is not called.  Calibration passes charge ``spend``."""
    from initbench.run.attach import attach_lora, init_context

    model, tokenizer, lora, base_params = _base_and_lora(method, rank, alpha, targets, family)
    model = attach_lora(model, method, lora, seed)
    ctx = init_context(
        model,
        tokenizer,
        method,
        lora,
        seed=seed,
        examples=calibration_examples(tokenizer),
        budget=budget,
        lr=budget.optimizer.lr if lr is None else lr,
        spend=spend or Spend(),
        base_params=base_params,
        device=torch.device("cpu"),
        family=family,
    )
    return model, ctx


def initialize(
    method: InitMethod,
    *,
    rank: int = 4,
    alpha: float = 8.0,
    targets: tuple[str, ...] = ALL_LINEAR,
    seed: int = 0,
    budget: Budget = BUDGET,
    lr: float | None = None,
    family: str = "",
) -> Initialized:
    """Attach and initialize exactly as a run does (``attach.attach_and_initialize``): a hook that
    raises surfaces as a ``MethodFailure`` naming the method and the hook, as in a run."""
    from initbench.run.attach import attach_and_initialize

    model, tokenizer, lora, base_params = _base_and_lora(method, rank, alpha, targets, family)
    spend = Spend()
    model, modified = attach_and_initialize(
        model,
        tokenizer,
        method,
        lora,
        seed=seed,
        examples=calibration_examples(tokenizer),
        budget=budget,
        lr=budget.optimizer.lr if lr is None else lr,
        spend=spend,
        base_params=base_params,
        device=torch.device("cpu"),
        family=family,
    )
    return Initialized(model, spend, modified)
