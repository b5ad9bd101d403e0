"""MiLoRA: minor singular components as the adapter.

Paper: Wang et al., "MiLoRA: Harnessing Minor Singular Components for Parameter-Efficient LLM
Finetuning", NAACL 2025, arXiv:2406.09044.
Code: https://github.com/sufenlp/MiLoRA, ``svd_init.py`` (``initialize_lora_layer(..., mode="min")``,
lines 16-57; the base offset, lines 144-149); not in peft, written here.

Formula (per layer, W of shape (out, in) in float32, exact SVD W = U diag(S) Vh, S descending,
rank r, peft scale s = alpha / r):
    U_m = U[:, -r:],  S_m = S[-r:] / s,  Vh_m = Vh[-r:, :]          (the r *smallest* triplets)
    B = U_m diag(sqrt(S_m)),   A = diag(sqrt(S_m)) Vh_m,   W <- W - s * B A.
The reference fixes lora_alpha = r (s = 1), which is this method's ``default_alpha``; the division by
s is the reference's too, so a suite that pins alpha still starts exactly at the base model.
"""

from __future__ import annotations

import torch

from initbench.api import LayerwiseInit


def milora_factors(weight: torch.Tensor, rank: int, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, B, residual) of MiLoRA for one (out, in) float32 weight."""
    U, S, Vh = torch.linalg.svd(weight, full_matrices=False)
    S_m = S[-rank:] / scale
    root = torch.sqrt(S_m)
    B = U[:, -rank:] * root
    A = root[:, None] * Vh[-rank:, :]
    return A, B, weight - scale * (B @ A)


class MiLoRA(LayerwiseInit):
    summary = "r smallest singular triplets of W in A and B, base replaced by W - BA (alpha = r)."
    paper = "Wang et al. 2025, arXiv:2406.09044"
    code = "https://github.com/sufenlp/MiLoRA (svd_init.py, mode='min'); written here"
    peft_init = True
    statistic = "none"

    def default_alpha(self, rank: int) -> float:
        return float(rank)

    def init_layer(self, weight, rank, scale, stats, generator):
        if rank > min(weight.shape):
            raise ValueError(f"MiLoRA needs rank <= min(out, in) = {min(weight.shape)}, got {rank}")
        return milora_factors(weight, rank, scale)
