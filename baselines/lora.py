"""LoRA with peft's default initialization (Init[A] of Hayou et al. 2024).

Paper: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022, arXiv 2106.09685.
Code: peft ``LoraLayer.reset_lora_parameters`` with ``init_lora_weights=True``:
A ~ Kaiming-uniform(a=sqrt(5)), B = 0, so the model starts unchanged.
"""

import math

import torch

from initbench.api import InitMethod, LayerwiseInit


class LoRA(InitMethod):
    summary = "peft default: A Kaiming-uniform (a=sqrt(5)), B = 0; starts at the base model."
    paper = "Hu et al. 2022, arXiv:2106.09685"
    code = "https://github.com/huggingface/peft (init_lora_weights=True)"
    peft_init = True


class Gaussian(InitMethod):
    """peft's ``init_lora_weights="gaussian"``: A ~ N(0, (1/r)^2) (std 1/r, peft ``reset_lora_parameters``), B = 0.

    Paper: the Gaussian A of Hu et al. 2022 (the paper's text; its code uses Kaiming-uniform); the
    std 1/r is peft's choice.  Code: peft ``LoraLayer.reset_lora_parameters``.
    """

    summary = "peft 'gaussian': A ~ N(0, std=1/r), B = 0; starts at the base model."
    paper = "Hu et al. 2022, arXiv:2106.09685 (Gaussian A as in the paper's text)"
    code = "https://github.com/huggingface/peft (init_lora_weights='gaussian')"
    peft_init = "gaussian"


class LoRAReversed(LayerwiseInit):
    """Init[B] of Hayou, Ghosh & Yu, "The Impact of Initialization on LoRA Finetuning Dynamics",
    NeurIPS 2024, arXiv:2406.08447: B random, A = 0 (the mirror of peft's default Init[A]).

    Formula (per layer, W of shape (out, in), rank r):
        A = 0 (r, in),   B_ij ~ N(0, sigma_B^2) i.i.d. (out, r),   sigma_B^2 = 1 / r.
    Section 2 of the paper draws the non-zero factor from a centred Gaussian whose variance follows
    the usual fan-in rule (sigma_A^2 = Theta(1/n) for A, whose fan-in is n; sigma_B^2 = Theta(1/r) for
    B, whose fan-in is r).  We take the constant 1 in Theta(1/r), i.e. LeCun/Kaiming-normal with gain 1
    on B's fan-in r -- the same rule that sets A's scale under Init[A] -- so that B A x keeps unit order
    once A moves.  No reference code is published; draws come from ``ctx.generator`` in layer order.
    Hyperparameter: ``variance_scale`` (sigma_B^2 = variance_scale / r), default 1.0.
    """

    summary = "Init[B] (Hayou et al. 2024): B ~ N(0, 1/r), A = 0; starts at the base model."
    paper = "Hayou, Ghosh & Yu 2024, arXiv:2406.08447 (Init[B])"
    code = "written here (no reference code); B drawn with the run's generator"
    peft_init = True
    statistic = "none"

    def __init__(self, variance_scale: float = 1.0):
        self.variance_scale = variance_scale

    def init_layer(self, weight, rank, scale, stats, generator):
        out_features, in_features = weight.shape
        B = torch.randn(out_features, rank, generator=generator) * math.sqrt(self.variance_scale / rank)
        A = torch.zeros(rank, in_features)
        return A, B, None
