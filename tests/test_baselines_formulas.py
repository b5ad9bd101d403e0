"""LoRA-GA: peft's version against peft's own preprocess_loraga, and the reference against peft's, differing
exactly as documented.  (The methods written here against their references: test_baselines_reference.py.)"""

from __future__ import annotations

import math

import pytest
import torch
from _zoo import RANK, TARGETS, attach, base_model, calibrator, lora_tensors


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
    config = LoraConfig(
        r=RANK,
        lora_alpha=16,
        use_rslora=True,
        target_modules=list(TARGETS),
        task_type="CAUSAL_LM",
        init_lora_weights="lora_ga",
        lora_ga_config=LoraGAConfig(),
    )

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
        f = out**0.25 / math.sqrt(16)
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
