"""Method variants any LoRA method can switch on, addressed as ``<method>+<variant>[+<variant>...]``.

* ``rslora`` -- rank-stabilized LoRA (Kalajdzievski 2023, arXiv:2312.03732): the adapter is scaled by
  alpha/sqrt(r) instead of alpha/r (peft ``use_rslora=True``).
* ``lora-plus`` -- LoRA+ (Hayou, Ghosh & Yu 2024, arXiv:2402.12354): B trains with a learning rate
  ``ratio`` times A's (default 16), through peft's ``peft.optimizers.create_loraplus_optimizer``.

``get_method("pissa+rslora+lora-plus")`` returns a :class:`VariantMethod` that delegates everything
to the wrapped method and overrides ``lora_config_kwargs`` / ``build_optimizer``; its ``name`` is the
full string, so result rows carry the variant.

rsLoRA reaches peft through ``InitMethod.use_rslora``, which the harness resolves into the run's
LoRA settings (and records in the ``use_rslora`` and ``lora_scale`` result columns).
"""

from __future__ import annotations

from typing import Any

import torch

from initbench.method.api import InitContext, InitMethod, LoraSettings
from initbench.spec.budget import OptimizerSpec

LORA_PLUS_RATIO = 16.0


def loraplus_optimizer(
    model: torch.nn.Module, lr: float, spec: OptimizerSpec, ratio: float = LORA_PLUS_RATIO
) -> torch.optim.Optimizer:
    """peft's LoRA+ optimizer: AdamW with the suite's betas, eps and weight decay; B matrices at
    ``lr * ratio``, A matrices at ``lr``."""
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(
        model,
        torch.optim.AdamW,
        lr=lr,
        loraplus_lr_ratio=ratio,
        betas=tuple(spec.betas),
        eps=spec.eps,
        weight_decay=spec.weight_decay,
    )


class VariantMethod(InitMethod):
    """A registered method with variants switched on; everything else is the wrapped method's."""

    VARIANTS = ("rslora", "lora-plus")

    def __init__(self, inner: InitMethod, variants: list[str], loraplus_ratio: float = LORA_PLUS_RATIO):
        self.inner = inner
        self.variants = tuple(variants)
        self.loraplus_ratio = loraplus_ratio
        inner_cls = type(inner)
        # per-instance copies of the wrapped method's class attributes
        for attr in ("paper", "code", "peft_init", "is_reference", "trains", "attaches_lora"):
            setattr(self, attr, getattr(inner_cls, attr))
        self.summary = f"{inner_cls.summary} [+{' +'.join(self.variants)}]"
        self.use_rslora = True if "rslora" in self.variants else inner.use_rslora

    def default_alpha(self, rank: int) -> float | None:
        return self.inner.default_alpha(rank)

    def paper_alpha(self, rank: int, family: str) -> float | None:
        return self.inner.paper_alpha(rank, family)

    def reference_calibration_examples(self, family: str) -> int | None:
        return self.inner.reference_calibration_examples(family)

    def lora_config_kwargs(self, lora: LoraSettings) -> dict[str, Any]:
        return self.inner.lora_config_kwargs(lora)

    def build_optimizer(self, model: torch.nn.Module, lr: float, spec: OptimizerSpec) -> torch.optim.Optimizer | None:
        if "lora-plus" in self.variants:
            return loraplus_optimizer(model, lr, spec, self.loraplus_ratio)
        return self.inner.build_optimizer(model, lr, spec)

    def initialize(self, model: torch.nn.Module, ctx: InitContext) -> None:
        self.inner.initialize(model, ctx)


def check_variants(base: InitMethod, variants: list[str]) -> str | None:
    """None if ``variants`` can wrap ``base``, else the reason they cannot."""
    unknown = [v for v in variants if v not in VariantMethod.VARIANTS]
    if unknown:
        return f"unknown variant {unknown[0]!r}; known: {', '.join(VariantMethod.VARIANTS)}"
    if len(set(variants)) != len(variants):
        return "a variant is named twice"
    if not (base.trains and base.attaches_lora):
        return "variants apply only to methods that train LoRA adapters"
    return None
