"""LoRA-GA: low-rank adaptation with gradient approximation -- the reference and peft's version.

Paper: Wang, Yu & Li, "LoRA-GA: Low-Rank Adaptation with Gradient Approximation", NeurIPS 2024,
arXiv:2407.05000.  Reference code: https://github.com/Outsider565/LoRA-GA (its peft fork,
``peft/src/peft/tuners/lora/layer.py: LoraLayer.lora_ga_init``; defaults in ``LoraGAConfig``:
direction "ArB2r", scale "stable", stable_gamma 16).

``lora-ga`` (:class:`LoRAGA`) is the reference, written here from the fork's ``lora_ga_init``
(``layer.py`` lines 207-245: svd_lowrank, "ArB2r", "stable"; 253-276: the offset).  Per layer, W (out, in):
    G = mean over calibration batches of dL/dW           (``ctx.calibration.weight_gradients()``)
    U, S, V = torch.svd_lowrank(G, q=min(4r, min(out, in)), niter=4)      (G ~ U diag(S) V^T)
    A = V^T[:r, :]            (r, in)   -- right singular vectors 1..r
    B = U[:, r:2r]            (out, r)  -- left singular vectors r+1..2r      ("ArB2r")
    f = out^(1/4) / sqrt(gamma), gamma = 16;   A <- f A,  B <- f B             ("stable")
    W <- W - s B A,   s = alpha / sqrt(r) (rsLoRA), alpha = 16.
The singular values S are not used.  The randomized SVD draws from torch's RNG, seeded here from the
run's generator (one seed per run, layers in model order).

``lora-ga-peft`` (:class:`LoRAGAPeft`) is peft's own ``LoraLayer.lora_ga_init`` (``LoraGAConfig()``
defaults, the same gradient attached as ``preprocess_loraga`` would attach it).  It differs from the
reference in exactly two ways (checked by
``tests/test_baselines_formulas.py::test_lora_ga_reference_vs_peft_differ_exactly_as_documented``):
  1. B carries the singular values: B = U[:, r:2r] diag(S[r:2r]) (the reference drops S);
  2. the "stable" factor f multiplies B only (the reference multiplies both A and B).
Everything else (same G, same svd_lowrank call, same direction, W <- W - s B A) is the same.

Scaling: the paper's setting is alpha = 16 with rsLoRA's alpha/sqrt(r) (the reference repo's Hydra
config defaults to lora_alpha 16; its ``use_rslora`` flag is off there, the paper's runs use it).
rsLoRA reaches peft through ``use_rslora``, the method's scaling convention (a suite may pin it).
"""

from __future__ import annotations

import math

import torch

from initbench.api import InitContext, InitError, LayerwiseInit
from initbench.core.seeding import seeded_torch_rng

PAPER = "Wang, Yu & Li 2024, arXiv:2407.05000"


def lora_ga_factors(
    grad: torch.Tensor, weight: torch.Tensor, rank: int, scale: float, gamma: float = 16.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, B, residual) of the reference LoRA-GA ("ArB2r", "stable") for one (out, in) gradient/weight.
    Draws from torch's global RNG (``torch.svd_lowrank``); seed it first."""
    out_features = grad.shape[0]
    q = min(4 * rank, min(grad.shape))
    if 2 * rank > q:
        raise InitError(f"LoRA-GA needs 2r <= min(out, in); r={rank}, shape {tuple(grad.shape)}")
    U, _S, V = torch.svd_lowrank(grad.float(), q=q, niter=4)
    factor = out_features**0.25 / math.sqrt(gamma)
    A = V.T[:rank, :] * factor
    B = U[:, rank : 2 * rank] * factor
    return A, B, weight - scale * (B @ A)


class LoRAGA(LayerwiseInit):
    summary = "Reference LoRA-GA: SVD of the calibration gradient, A=V^T[:r], B=U[:,r:2r], stable scale, rsLoRA a=16."
    paper = PAPER
    code = "https://github.com/Outsider565/LoRA-GA (peft fork, lora_ga_init); written here"
    peft_init = True
    calibration_reference = 8  # reproduce: conf/init/gradient.yaml, bsz 1 x iters 8
    statistic = "weight_gradient"
    seed_torch_rng = True  # torch.svd_lowrank draws from torch's RNG, seeded from the run's generator

    def __init__(self, stable_gamma: float = 16.0, alpha: float = 16.0, use_rslora: bool = True):
        self.stable_gamma = stable_gamma
        self.alpha = alpha
        self.use_rslora = use_rslora

    def default_alpha(self, rank: int) -> float:
        return self.alpha

    def init_layer(self, weight, rank, scale, stats, generator):
        return lora_ga_factors(stats, weight, rank, scale, self.stable_gamma)


class LoRAGAPeft(LoRAGA):
    summary = "peft's LoRA-GA (lora_ga_init): like lora-ga but S in B and the stable factor on B only."
    code = "https://github.com/huggingface/peft (preprocess_loraga + init_lora_weights='lora_ga')"

    def initialize(self, model: torch.nn.Module, ctx: InitContext) -> None:
        """peft's per-layer ``lora_ga_init`` writes A, B and the residual itself, so this loop stays here
        (the layer view's ``module`` and ``adapter`` are for exactly such calls)."""
        from peft import LoraGAConfig

        grads = self.statistics(ctx)
        config = LoraGAConfig(direction="ArB2r", scale="stable", stable_gamma=int(self.stable_gamma))
        with seeded_torch_rng(ctx.generator):
            for layer in ctx.layers():
                grad, module = grads[layer.name], layer.module
                # preprocess_loraga attaches the gradient in the weight's own layout
                module.get_base_layer()._peft_loraga_grad = grad.T if getattr(module, "fan_in_fan_out", False) else grad
                module.lora_ga_init(layer.adapter, config)
