"""Optional per-run diagnostics of the adapter update (off by default).

Switch on with the environment variable ``INITBENCH_DIAGNOSTICS=1`` (any of
``1``, ``true``, ``yes``, ``on``).  It does not change what a run computes, so it
is not part of the suite's spec hash or the run's config hash; results written
with it off have nulls in the three columns below.

Per targeted LoRA layer, with ``Delta = scale * B [M] A`` (peft's
``get_delta_weight``, so a middle matrix is included) and ``W0`` the pretrained
weight before the adapters were attached:

* ``init_update_erank`` -- effective rank of ``Delta`` right after ``initialize``;
* ``final_update_erank`` -- effective rank of ``Delta`` after training;
* ``relative_weight_change`` -- ``||W_final - W0||_F / ||W0||_F`` with
  ``W_final = base weight + Delta`` the layer's effective weight after training
  (so a method that does not start at the base model counts its starting offset
  too; a method that moves the base weight, PiSSA's residual, does not, since
  ``base + Delta`` is unchanged at step 0).

Effective rank is the entropy-based one of Roy & Vetterli (2007), "The
effective rank: a measure of effective dimensionality", EUSIPCO:
``erank(X) = exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / sum_j sigma_j``
(singular values normalized by their sum, natural log, terms with p_k = 0
dropped).  It lies in [1, rank X]; a zero matrix (LoRA's B = 0 at init) has no
spectrum and is given erank 0.

Each column of the results is the mean over the run's targeted layers.
"""

from __future__ import annotations

import os

import torch

from initbench.method.adapters import delta_weight

ENV = "INITBENCH_DIAGNOSTICS"
COLUMNS = ("init_update_erank", "final_update_erank", "relative_weight_change")


def enabled() -> bool:
    """Whether ``INITBENCH_DIAGNOSTICS`` switches the diagnostics on."""
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


def effective_rank(matrix: torch.Tensor) -> float:
    """Roy & Vetterli's entropy effective rank of ``matrix`` (0 for a zero matrix)."""
    matrix = matrix.detach().to(torch.float64)
    if not torch.isfinite(matrix).all():
        return float("nan")  # a diverged run
    sigma = torch.linalg.svdvals(matrix)
    total = sigma.sum()
    if total <= 0:
        return 0.0
    p = sigma / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    from initbench.method.adapters import lora_layers

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return lora_layers(inner)


def _base_weight(layer: torch.nn.Module) -> torch.Tensor:
    weight = layer.get_base_layer().weight.detach().to(torch.float32)
    return weight.T if getattr(layer, "fan_in_fan_out", False) else weight


def snapshot(model: torch.nn.Module, targets: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The pretrained weights ``W0`` (out, in) of every targeted linear layer, before attach."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in targets:
            out[name] = module.weight.detach().clone()
    return out


class Tracker:
    """Records the initial update after ``initialize`` and summarizes the run after training."""

    def __init__(self, pretrained: dict[str, torch.Tensor]):
        self.pretrained = pretrained
        self.init_erank: dict[str, float] = {}

    def after_init(self, model: torch.nn.Module) -> None:
        self.init_erank = {name: effective_rank(delta_weight(layer)) for name, layer in _layers(model)}

    def summary(self, model: torch.nn.Module) -> dict[str, float | None]:
        final, change = [], []
        for name, layer in _layers(model):
            delta = delta_weight(layer)
            final.append(effective_rank(delta))
            w0 = self.pretrained.get(name)
            if w0 is not None:
                w0 = w0.to(torch.float32)
                w0 = w0.T if getattr(layer, "fan_in_fan_out", False) and w0.shape != delta.shape else w0
                effective = _base_weight(layer) + delta
                change.append(float(torch.linalg.norm(effective - w0) / torch.linalg.norm(w0)))
        mean = lambda xs: float(sum(xs) / len(xs)) if xs else None  # noqa: E731
        return {
            "init_update_erank": mean(list(self.init_erank.values())),
            "final_update_erank": mean(final),
            "relative_weight_change": mean(change),
        }
