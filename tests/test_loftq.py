"""LoftQ and its NF4 round trip, against derivations written here from the papers and, where they are
installed, against bitsandbytes (the NF4 peft's ``loftq_init`` calls) and peft itself (CUDA only)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from initbench_baselines.loftq import LoftQ, loftq_factors
from initbench_baselines.nf4 import nf4_code, nf4_round_trip

# QLoRA (arXiv:2305.14314), appendix E: the NF4 data type's 16 values as the paper lists them.
QLORA_NF4 = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
]


def weights() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = [(96, 64), (64, 160), (37, 50), (5, 3)]  # (37, 50) and (5, 3) end in a short block
    out = [0.02 * torch.randn(shape, generator=g) for shape in shapes]
    out.append(torch.cat([torch.zeros(64), torch.randn(64, generator=g)]).reshape(4, 32))  # one block of zeros
    return out


def nearest_by_argmin(weight: torch.Tensor, block: int = 64) -> torch.Tensor:
    """LoftQ's NFQuantizer read as written: per block divide by absmax, argmin |x - code|, times absmax."""
    code = torch.tensor(QLORA_NF4)
    flat = weight.reshape(-1)
    out = torch.empty_like(flat)
    for start in range(0, flat.numel(), block):
        chunk = flat[start : start + block]
        absmax = chunk.abs().max()
        if absmax == 0:
            out[start : start + block] = 0.0
            continue
        index = (chunk[:, None] / absmax - code[None, :]).abs().argmin(dim=1)
        out[start : start + block] = code[index] * absmax
    return out.reshape(weight.shape)


def test_nf4_code_is_qloras_table():
    assert torch.equal(nf4_code(), torch.tensor(QLORA_NF4, dtype=torch.float32))


@pytest.mark.parametrize("index", range(5))
def test_nf4_round_trip_is_the_nearest_code_value_per_block(index):
    weight = weights()[index]
    assert torch.equal(nf4_round_trip(weight), nearest_by_argmin(weight))


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed")
def test_nf4_round_trip_equals_bitsandbytes():
    """bitsandbytes' quantizer picks the same code value and absmax for every entry.  Decoded here as
    ``code[index] * absmax`` (two indices per byte, high nibble first): bitsandbytes 0.50.2's CPU
    ``dequantize_4bit`` misplaces blocks when the last dimension is not a multiple of 64 (a (64, 160)
    weight comes back with errors up to 2 on unit-variance entries), though its quantization is right."""
    import bitsandbytes.functional as bnb

    for weight in weights():
        packed, state = bnb.quantize_4bit(weight, blocksize=64, quant_type="nf4", compress_statistics=False)
        index = torch.stack([packed.reshape(-1) >> 4, packed.reshape(-1) & 15], dim=1).reshape(-1).long()
        absmax = state.absmax.repeat_interleave(64)[: weight.numel()]
        decoded = (torch.tensor(QLORA_NF4)[index[: weight.numel()]] * absmax).reshape(weight.shape)
        assert torch.equal(nf4_round_trip(weight), decoded)
        if weight.shape[-1] % 64 == 0:
            assert torch.equal(nf4_round_trip(weight), bnb.dequantize_4bit(packed, state))


def test_one_step_is_nf4_of_w_and_the_best_rank_r_fit_of_its_error():
    weight, rank = weights()[0], 4
    base, A, B = loftq_factors(weight, rank, iterations=1)
    assert torch.equal(base, nf4_round_trip(weight))
    assert A.shape == (rank, 64) and B.shape == (96, rank)
    error = (weight - base).double()
    U, S, Vh = torch.linalg.svd(error, full_matrices=False)  # Eckart-Young, in float64
    torch.testing.assert_close((B @ A).double(), U[:, :rank] @ torch.diag(S[:rank]) @ Vh[:rank], atol=1e-6, rtol=0)
    # B and A share the singular values evenly: B^T B = A A^T = diag(S_r)
    torch.testing.assert_close((B.T @ B).double(), torch.diag(S[:rank]), atol=1e-6, rtol=0)
    torch.testing.assert_close((A @ A.T).double(), torch.diag(S[:rank]), atol=1e-6, rtol=0)


def test_each_step_quantizes_what_the_adapter_leaves():
    weight, rank = weights()[1], 8
    _, A1, B1 = loftq_factors(weight, rank, iterations=1)
    base2, A2, B2 = loftq_factors(weight, rank, iterations=2)
    assert torch.equal(base2, nf4_round_trip(weight - B1 @ A1))
    U, S, Vh = torch.linalg.svd((weight - base2).double(), full_matrices=False)
    torch.testing.assert_close((B2 @ A2).double(), U[:, :rank] @ torch.diag(S[:rank]) @ Vh[:rank], atol=1e-6, rtol=0)
    # the paper's objective ||W - Q - BA|| does not grow from one step to the next here
    assert (weight - base2 - B2 @ A2).norm() <= (weight - nf4_round_trip(weight) - B1 @ A1).norm()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="4-bit NF4 only"):
        LoftQ(bits=8)
    with pytest.raises(ValueError, match="at least one"):
        LoftQ(iterations=0)


@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None,
    reason="peft's loftq_init needs CUDA and bitsandbytes",
)
def test_equals_peft_loftq_init_on_cuda():
    from peft.utils.loftq_utils import loftq_init

    weight = weights()[0].cuda()
    for iterations in (1, 3):
        q, A, B = loftq_init(weight, num_bits=4, reduced_rank=4, num_iter=iterations)
        base, ours_A, ours_B = loftq_factors(weight, 4, iterations)
        assert torch.equal(base, q.float())
        torch.testing.assert_close(ours_B @ ours_A, B @ A, atol=1e-5, rtol=0)
