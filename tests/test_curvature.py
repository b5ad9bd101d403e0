"""The curvature estimate against the exact Hessian, formed independently on a model small enough."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from initbench.inputs.models import tiny_model
from initbench.run.curvature import top_hessian_eigenvalues

SHAPE = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}


def _lora_model(zero_b: bool) -> torch.nn.Module:
    model, _ = tiny_model(SHAPE, torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    if not zero_b:  # a trained-looking adapter: the Hessian's B-B block is no longer zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, 0.3)
    return model


def _batches(vocab: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(2):
        ids = torch.randint(4, vocab, (3, 7), generator=g)
        labels = ids.clone()
        labels[:, :3] = -100
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def _exact_hessian_eigenvalues(model: torch.nn.Module, batches) -> torch.Tensor:
    """Every eigenvalue of the dense Hessian of the mean batch loss, by torch.autograd.functional on a
    flat parameter vector through torch.func.functional_call (no Lanczos, no HVP loop of ours)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
    flat0 = torch.cat([p.detach().reshape(-1) for n, p in model.named_parameters() if p.requires_grad])
    model.eval()

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(flat, [s.numel() for s in shapes])
        params = {n: piece.view(s) for n, piece, s in zip(names, pieces, shapes)}
        losses = [functional_call(model, params, args=(), kwargs=b).loss for b in batches]
        return torch.stack(losses).mean()

    with sdpa_kernel([SDPBackend.MATH]):  # the fused SDPA kernels have no double backward
        hessian = torch.autograd.functional.hessian(loss_of, flat0)
    hessian = (hessian + hessian.T) / 2
    return torch.linalg.eigvalsh(hessian.double()).flip(0)


def test_lanczos_matches_the_exact_hessian_top_eigenvalues():
    for zero_b in (True, False):
        model = _lora_model(zero_b)
        batches = _batches(model.config.vocab_size)
        exact = _exact_hessian_eigenvalues(model, batches)
        estimate = top_hessian_eigenvalues(
            model, batches, k=2, max_iterations=80, tol=1e-7, generator=torch.Generator().manual_seed(0)
        )
        for found, truth in zip(estimate.eigenvalues, exact[:2].tolist()):
            assert abs(found - truth) <= 1e-3 * abs(truth), (zero_b, estimate.eigenvalues, exact[:3])
        assert estimate.converged and estimate.hvps == estimate.iterations
        assert estimate.passes == estimate.hvps * len(batches)
        assert estimate.trainable_params == exact.numel()


def test_estimate_is_deterministic_and_leaves_the_model_as_it_was():
    model = _lora_model(zero_b=False)
    batches = _batches(model.config.vocab_size)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    runs = [
        top_hessian_eigenvalues(model, batches, max_iterations=15, generator=torch.Generator().manual_seed(3))
        for _ in range(2)
    ]
    assert runs[0].eigenvalues == runs[1].eigenvalues
    assert model.training
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())


def test_a_zero_b_init_is_indefinite_and_the_estimate_is_its_algebraic_maximum():
    """At B = 0 the Hessian is indefinite (the A-B cross block gives eigenvalues of both signs); the
    estimate is the algebraically largest eigenvalue, not a negative one."""
    model = _lora_model(zero_b=True)
    batches = _batches(model.config.vocab_size)
    exact = _exact_hessian_eigenvalues(model, batches)
    assert exact[-1] < 0 < exact[0]
    estimate = top_hessian_eigenvalues(
        model, batches, max_iterations=80, tol=1e-7, generator=torch.Generator().manual_seed(0)
    )
    assert abs(estimate.lambda_max - float(exact[0])) <= 1e-3 * float(exact[0])


def test_the_lanczos_vectors_are_capped_by_the_memory_available(monkeypatch):
    """Each Lanczos vector is a float32 copy of the trainable parameters (GBs for an adapter of 100Ms of
    parameters): with too little memory for the iterations asked, as many as fit run, with a warning, and the
    estimate says how many and whether they converged; too little for two: a MemoryError first."""
    import pytest

    from initbench.run import curvature

    model = _lora_model(zero_b=False)
    batches = _batches(model.config.vocab_size)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    working = curvature._WORKING_VECTORS * 8 * n
    # room for the start vector and 5 more (one per iteration), besides the float64 working vectors
    room = (working + 6 * 4 * n) / curvature.BASIS_MEMORY_SHARE
    monkeypatch.setattr(curvature, "available_memory", lambda device: int(room) + 1)
    with pytest.warns(UserWarning, match="5 Lanczos iterations fit"):
        estimate = top_hessian_eigenvalues(
            model, batches, max_iterations=40, tol=1e-12, generator=torch.Generator().manual_seed(0)
        )
    assert estimate.iterations == 5 and not estimate.converged
    monkeypatch.setattr(curvature, "available_memory", lambda device: working)
    with pytest.raises(MemoryError, match=f"{n:,} trainable parameters: even two Lanczos iterations"):
        top_hessian_eigenvalues(model, batches, max_iterations=40)
    monkeypatch.setattr(curvature, "available_memory", lambda device: None)  # unknown: as asked
    assert top_hessian_eigenvalues(model, batches, max_iterations=3, tol=1e-12).iterations == 3
