"""LoftQ: LoRA-fine-tuning-aware quantization.

Paper: Li et al., "LoftQ: LoRA-Fine-Tuning-Aware Quantization for Large Language Models", ICLR 2024,
arXiv:2310.08659.  Code: https://github.com/yxli2123/LoftQ; peft ``init_lora_weights="loftq"``
(``peft.utils.loftq_utils.loftq_init``).

Formula (T alternating steps, default T = 1, 4-bit NF4): Q_t = quantize(W - A_{t-1} B_{t-1}),
(B_t, A_t) = rank-r SVD of W - Q_t split as U sqrt(S), sqrt(S) Vh; the frozen base becomes the
dequantized Q_T.  The model starts at Q_T + B A ~ W (not exactly W: quantization error remains).
peft does not divide by the LoRA scale, so alpha = r (scale 1) is this method's default.

peft's ``loftq_init`` needs bitsandbytes and a CUDA (or XPU) device; on a machine without them
``initialize`` raises "loftq needs a CUDA GPU with bitsandbytes", which the harness records as the
run's failure.
"""

from __future__ import annotations

import importlib.util

import torch

from initbench.api import InitContext, LayerwiseInit

MESSAGE = "loftq needs a CUDA GPU with bitsandbytes"


def loftq_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


class LoftQ(LayerwiseInit):
    summary = "LoftQ: base = NF4-quantized W, A/B = rank-r SVD of the quantization residual (needs CUDA + bnb)."
    paper = "Li et al. 2024, arXiv:2310.08659"
    code = "https://github.com/yxli2123/LoftQ (via peft loftq_init)"
    peft_init = True  # the LoftQ factors are written in ``initialize`` (attaching with "loftq" fails without bnb)

    def __init__(self, bits: int = 4, iterations: int = 1):
        self.bits = bits
        self.iterations = iterations

    def default_alpha(self, rank: int) -> float:
        return float(rank)

    def initialize(self, model: torch.nn.Module, ctx: InitContext) -> None:
        if not loftq_available():
            raise RuntimeError(MESSAGE)
        super().initialize(model, ctx)

    def init_layer(self, weight, rank, scale, stats, generator):
        from peft.utils.loftq_utils import loftq_init

        qweight, A, B = loftq_init(weight, num_bits=self.bits, reduced_rank=rank, num_iter=self.iterations)
        return A, B, qweight.float()
