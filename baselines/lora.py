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
    NeurIPS 2024, arXiv:2406.08447: B random, A = 0.

    The paper (Section 3, the setup that defines the two schemes) draws both factors i.i.d. from
    centred Gaussians, A_ij ~ N(0, sigma_A^2), B_ij ~ N(0, sigma_B^2), and sets
        Init[A]: sigma_B = 0, sigma_A^2 = Theta(1/n)   (n: the width, A's fan-in),
        Init[B]: sigma_A = 0, sigma_B^2 = Theta(1/r)   (r: the rank, B's fan-in; = Theta(1), r fixed).
    It fixes the order in the width, not the constant, and publishes no code for Init[B].

    Formula here (per layer, W of shape (out, in), rank r):
        A = 0 (r, in),   B_ij ~ N(0, variance_scale / r) i.i.d. (out, r),   variance_scale = 1,
    the paper's Gaussian with constant 1 (LeCun-normal on B's fan-in r).  This is *not* the mirror of
    peft's Init[A] (``lora``): peft draws A from Kaiming-uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)),
    variance 1/(3 in), so its mirror on B would be U(+-1/sqrt(r)), variance 1/(3r), a third of ours;
    both are Theta(1/r), as the paper asks.  ``variance_scale=1/3`` gives that variance (still Gaussian).
    Assumed: the copies of the paper reachable while this was written held its abstract and summaries,
    not Section 3's text, so the two rates above are the paper's as recalled (issue 14 quotes the same
    B ~ N(0, 1/r)); recheck them against the PDF.  Draws come from ``ctx.generator`` in layer order.
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
