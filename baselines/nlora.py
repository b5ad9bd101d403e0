"""NLoRA, IntTune and SLoRA: an r x r matrix N between B and A (``scale * B N A x``).

Paper: Guo et al., "NLoRA: Nystrom-Initiated Low-Rank Adaptation for Large Language Models",
arXiv:2502.14482.  Code: https://github.com/TracyGuo2001/NLoRA (its peft fork,
``peft/src/peft/tuners/lora/layer.py: LoraLayer.nlora_init`` lines 306-329 and ``slora_init`` lines
344-362, forward ``lora_B(lora_N(lora_A(x))) * scaling`` lines 457-459; ``nlora.py``,
``inttune.py``; ``scripts/run_nlora.sh`` uses lora_alpha = lora_rank).  Written here.

``nlora`` (``init_lora_weights="n_lora"``), per layer W of shape (out, in):
    A = W[:r, :] (r, in),  B = W[:, :r] (out, r),  N = W[:r, :r] (r, r)   (first r rows / columns)
no pseudo-inverse of N, and no offset of the base weight, so the model does NOT start at the base
model: it starts at W + scale * W[:, :r] W[:r, :r] W[:r, :] (by design).  A, B and N all train.
``nlora-inttune`` (``inttune.py``, lines 232-233 freeze A and B): the same init, only N trains
(r*r parameters per layer).
``slora`` (``slora_init``): A and N Kaiming-uniform (a = sqrt(5), as nn.Linear), B = 0; all train;
starts at the base model (B = 0).
The reference's N is an ``nn.Linear(r, r)`` whose weight is N, applied after A: B (N (A x)).
Alpha: the authors' scripts set lora_alpha = r (scale 1), this methods' ``default_alpha``.
Random draws come from the run's generator (the reference uses torch's global RNG).
"""

from __future__ import annotations

import math

import torch

from initbench.api import InitError, LayerInit, LayerwiseInit


def nlora_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A (r, in), B (out, r), N (r, r)) of NLoRA's Nystrom init: rows, columns and corner of W."""
    if rank > min(weight.shape):
        raise InitError(f"NLoRA needs r <= min(out, in) = {min(weight.shape)}, got {rank}")
    return weight[:rank, :].clone(), weight[:, :rank].clone(), weight[:rank, :rank].clone()


def slora_factors(
    weight: torch.Tensor, rank: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, B, N) of SLoRA: A and N Kaiming-uniform (a = sqrt(5)), B = 0."""
    A = torch.empty(rank, weight.shape[1])
    N = torch.empty(rank, rank)
    torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=generator)
    torch.nn.init.kaiming_uniform_(N, a=math.sqrt(5), generator=generator)
    return A, torch.zeros(weight.shape[0], rank), N


class NLoRA(LayerwiseInit):
    summary = "NLoRA: A = W[:r], B = W[:, :r], middle N = W[:r, :r]; A, B, N train; starts changed."
    paper = "Guo et al. 2025, arXiv:2502.14482"
    code = "https://github.com/TracyGuo2001/NLoRA (peft fork, nlora_init); written here"
    peft_init = True
    trained_parts = ("A", "B", "M")

    def default_alpha(self, rank: int) -> float:
        return float(rank)

    def factors(self, weight, rank, generator):
        return nlora_factors(weight, rank)

    def init_layer(self, weight, rank, scale, stats, generator):
        A, B, N = self.factors(weight, rank, generator)
        return LayerInit(A, B, middle=N)


class NLoRAIntTune(NLoRA):
    summary = "NLoRA's IntTune: NLoRA's init, only the r x r middle N trains."
    code = "https://github.com/TracyGuo2001/NLoRA (inttune.py); written here"
    trained_parts = ("M",)


class SLoRA(NLoRA):
    summary = "SLoRA: A and middle N Kaiming-uniform, B = 0; A, B, N train."
    code = "https://github.com/TracyGuo2001/NLoRA (peft fork, slora_init); written here"

    def factors(self, weight, rank, generator):
        return slora_factors(weight, rank, generator)
