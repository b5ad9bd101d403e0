"""Methods written here against direct transcriptions of their formulas, and LoRA-GA against peft."""

from __future__ import annotations

import math

import pytest
import torch

from _zoo import RANK, TARGETS, attach, base_model, calibrator, lora_tensors
from initbench_baselines.lora import LoRAReversed
from initbench_baselines.lora_ga import lora_ga_factors
from initbench_baselines.milora import milora_factors


def _matrix(out=12, inp=10, seed=0):
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed))


def test_milora_transcription():
    W, r, s = _matrix(), 3, 0.5
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    B = U[:, -r:] @ torch.diag(torch.sqrt(S[-r:] / s))
    A = torch.diag(torch.sqrt(S[-r:] / s)) @ Vh[-r:, :]
    A2, B2, W2 = milora_factors(W, r, s)
    assert torch.allclose(A2, A, atol=1e-6) and torch.allclose(B2, B, atol=1e-6)
    assert torch.allclose(W2, W - s * B @ A, atol=1e-6)
    assert torch.allclose(W2 + s * B2 @ A2, W, atol=1e-5)


def test_lora_ga_transcription():
    G, W, r, s, gamma = _matrix(16, 12, 1), _matrix(16, 12, 2), 3, 16 / math.sqrt(3), 16.0
    torch.manual_seed(11)
    U, S, V = torch.svd_lowrank(G, q=min(4 * r, min(G.shape)), niter=4)
    f = 16 ** 0.25 / math.sqrt(gamma)  # out_features = 16
    A, B = V.T[:r] * f, U[:, r : 2 * r] * f
    torch.manual_seed(11)
    A2, B2, W2 = lora_ga_factors(G, W, r, s, gamma)
    assert torch.equal(A2, A) and torch.equal(B2, B)
    assert torch.allclose(W2, W - s * B @ A, atol=1e-6)
    # orientation: A lives in input space (rows of V^T), B in output space (columns of U)
    assert A2.shape == (r, 12) and B2.shape == (16, r)
    assert torch.allclose(A2 @ A2.T, f * f * torch.eye(r), atol=1e-5)


def test_lora_reversed_transcription():
    gen = torch.Generator().manual_seed(4)
    A, B, new = LoRAReversed().init_layer(_matrix(), 4, 2.0, None, gen)
    expected = torch.randn(12, 4, generator=torch.Generator().manual_seed(4)) / math.sqrt(4)
    assert new is None and torch.equal(A, torch.zeros(4, 10)) and torch.equal(B, expected)


def _exact_svd_lowrank(A, q=6, niter=2, M=None):
    """A deterministic stand-in for torch.svd_lowrank (exact SVD, signs fixed) so two code paths that
    draw their random projections differently can be compared exactly."""
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    sign = torch.sign(U[0])
    sign[sign == 0] = 1
    return (U * sign)[:, :q], S[:q], (Vh.T * sign)[:, :q]


@pytest.fixture
def exact_svd(monkeypatch):
    monkeypatch.setattr(torch, "svd_lowrank", _exact_svd_lowrank)


def test_lora_ga_peft_equals_peft_preprocess_loraga(exact_svd):
    from peft import LoraConfig, LoraGAConfig, get_peft_model, preprocess_loraga

    ours, _, _ = attach("lora-ga-peft")
    model, _ = base_model()
    config = LoraConfig(r=RANK, lora_alpha=16, use_rslora=True, target_modules=list(TARGETS), task_type="CAUSAL_LM",
                        init_lora_weights="lora_ga", lora_ga_config=LoraGAConfig())

    def train_step():
        for batch in calibrator(model).batches(backward=True):
            model(**batch).loss.backward()

    preprocess_loraga(model, config, train_step)
    theirs = get_peft_model(model, config)
    a, b = lora_tensors(ours), lora_tensors(theirs)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=1e-5), key


def test_lora_ga_reference_vs_peft_differ_exactly_as_documented(exact_svd):
    ref, _, _ = attach("lora-ga")
    peft_, _, _ = attach("lora-ga-peft")
    ref_t, peft_t = lora_tensors(ref), lora_tensors(peft_)
    base, _ = base_model()
    for prefix in ("model.layers.0.self_attn.k_proj", "model.layers.1.mlp.down_proj"):
        A_ref, B_ref = ref_t[f"{prefix}.lora_A.default.weight"], ref_t[f"{prefix}.lora_B.default.weight"]
        A_p, B_p = peft_t[f"{prefix}.lora_A.default.weight"], peft_t[f"{prefix}.lora_B.default.weight"]
        out = B_ref.shape[0]
        f = out ** 0.25 / math.sqrt(16)
        # 1. the stable factor: on A and B in the reference, on B only in peft
        assert torch.allclose(A_ref, f * A_p, atol=1e-6)
        # 2. peft's B carries the singular values S[r:2r]; B_p = B_ref diag(S[r:2r])
        S = (B_p.T @ B_ref).diagonal() / (B_ref.T @ B_ref).diagonal() * 1.0
        assert torch.allclose(B_p, B_ref @ torch.diag(S), atol=1e-6)
        assert (S[:-1] >= S[1:] - 1e-6).all() and (S > 0).all()  # singular values, descending
    # and both start at the base model
    assert ref_t.keys() == peft_t.keys()


def test_lora_ga_uses_rslora_alpha_16():
    model, _, _ = attach("lora-ga")
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.lora_alpha["default"] == 16 and layer.use_rslora["default"]
    assert layer.scaling["default"] == pytest.approx(16 / math.sqrt(RANK))
