"""NF4, the 4-bit NormalFloat data type of QLoRA, as a quantize-dequantize round trip in plain torch.

NF4 (Dettmers et al., "QLoRA", NeurIPS 2023, arXiv:2305.14314, section 3 and appendix E) is what
bitsandbytes' ``quant_type="nf4"`` stores and what LoftQ's reference code builds with
``NFQuantizer(method="normal")``: 16 values, 8 positive quantiles of N(0, 1) at
``linspace(offset, 0.5, 9)[:-1]``, zero, 7 negative ones at ``linspace(offset, 0.5, 8)[:-1]``, with
``offset = 0.9677083``, divided by the largest so the code spans [-1, 1].  A weight is cut into blocks
of 64 consecutive entries (row-major, the last block may be short), each block is divided by its
largest absolute value (its ``absmax``), each entry becomes the nearest code value, and the
dequantized weight is ``code[index] * absmax`` (all float32, as both references compute it).

Only the round trip is needed here: LoftQ's frozen base is the dequantized weight, kept in float32.
"""

from __future__ import annotations

import functools

import torch

OFFSET = 0.9677083  # QLoRA's choice: the outermost quantile is the mean of the 1 - 1/(2*15) and 1 - 1/(2*16) quantiles
BLOCK_SIZE = 64  # bitsandbytes' default block for 4-bit weights, LoftQ's ``block_size``


@functools.cache
def nf4_code() -> torch.Tensor:
    """The 16 NF4 values, ascending, float32, from -1 to 1 with an exact zero."""
    positive = torch.linspace(OFFSET, 0.5, 9)[:-1].double()  # float32 grid, as the references build it
    negative = torch.linspace(OFFSET, 0.5, 8)[:-1].double()
    values = (
        torch.cat([torch.special.ndtri(positive), torch.zeros(1, dtype=torch.float64), -torch.special.ndtri(negative)])
        .float()
        .sort()
        .values
    )
    return values / values.max()


def nf4_round_trip(weight: torch.Tensor, block_size: int = BLOCK_SIZE) -> torch.Tensor:
    """``weight`` quantized to NF4 in blocks of ``block_size`` and dequantized, float32, same shape.

    A block of zeros stays zero (its absmax is 0)."""
    flat = weight.detach().to(torch.float32).reshape(-1)
    blocks = torch.nn.functional.pad(flat, (0, (-flat.numel()) % block_size)).reshape(-1, block_size)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    scaled = torch.where(absmax > 0, blocks / absmax.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    code = nf4_code().to(flat.device)
    index = torch.bucketize(scaled, (code[1:] + code[:-1]) / 2)  # the nearest code value
    return (code[index] * absmax).reshape(-1)[: flat.numel()].reshape(weight.shape)
