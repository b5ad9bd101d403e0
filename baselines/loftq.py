"""LoftQ: LoRA-fine-tuning-aware quantization.

Paper: Li et al., "LoftQ: LoRA-Fine-Tuning-Aware Quantization for Large Language Models", ICLR 2024,
arXiv:2310.08659 (Algorithm 1).  Code: https://github.com/yxli2123/LoftQ (``utils.loftq_init`` with its
``NFQuantizer``; its ``quantize_save.py`` now calls peft), peft ``init_lora_weights="loftq"``
(``peft.utils.loftq_utils.loftq_init``).

Formula (T alternating steps, default T = 1 as in peft's ``LoftQConfig`` and the reference's
``quantize_save.py``; its README's example uses 5, available as ``LoftQ(iterations=5)``): starting
from R_0 = W, Q_t = NF4(R_{t-1}) (quantize, then dequantize), (B_t, A_t) = rank-r SVD of W - Q_t
split as U sqrt(S), sqrt(S) Vh, R_t = W - B_t A_t.  The frozen base becomes Q_T (float32) and the
adapter (B_T, A_T), so the model starts at Q_T + B A ~ W (quantization error beyond rank r remains).
peft does not divide by the LoRA scale, so alpha = r (scale 1) is this method's default.

NF4 here is ``initbench_baselines.nf4``, plain torch on any device, equal bit for bit to
bitsandbytes' 4-bit NF4 round trip (blocks of 64, tested against bitsandbytes where it is installed)
that peft's ``loftq_init`` calls.  peft itself needs bitsandbytes and a CUDA or XPU device for 4
bits; the reference's own ``NFQuantizer`` is the same data type.  Only 4-bit NF4 is built (peft's 8-bit
path is bitsandbytes' int8 and the reference's 2-bit a 4-value table).
"""

from __future__ import annotations

import torch
from initbench_baselines.nf4 import nf4_round_trip

from initbench.api import LayerwiseInit


def loftq_factors(
    weight: torch.Tensor, rank: int, iterations: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LoftQ's alternation on one (out, in) weight: the dequantized base Q, A (rank, in), B (out, rank)."""
    if iterations < 1:
        raise ValueError(f"LoftQ needs at least one alternating step, got iterations={iterations}")
    target = weight.detach().to(torch.float32)
    remainder = target
    for _ in range(iterations):
        base = nf4_round_trip(remainder)
        U, S, Vh = torch.linalg.svd(target - base, full_matrices=False)
        root = S[:rank].sqrt()
        B, A = U[:, :rank] * root, root[:, None] * Vh[:rank]
        remainder = target - B @ A
    return base, A, B


class LoftQ(LayerwiseInit):
    summary = "LoftQ: base = NF4-quantized W, A/B = rank-r SVD of the quantization residual."
    paper = "Li et al. 2024, arXiv:2310.08659"
    code = "https://github.com/yxli2123/LoftQ (as peft loftq_init, NF4 as bitsandbytes)"
    peft_init = True  # the LoftQ factors are written by ``init_layer`` (peft's "loftq" needs bitsandbytes)

    def __init__(self, bits: int = 4, iterations: int = 1):
        if bits != 4:
            raise ValueError(f"loftq: bits={bits} is not built; initbench's LoftQ quantizes to 4-bit NF4 only")
        if iterations < 1:
            raise ValueError(f"loftq: iterations={iterations}; LoftQ needs at least one alternating step")
        self.bits = bits
        self.iterations = iterations

    def default_alpha(self, rank: int) -> float:
        return float(rank)

    def init_layer(self, weight, rank, scale, stats, generator):
        base, A, B = loftq_factors(weight, rank, self.iterations)
        return A, B, base
