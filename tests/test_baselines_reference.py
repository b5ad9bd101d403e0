"""Baselines against their references (issue 14): every method written here is checked against a
derivation written from the reference's math (not from our code, and not the reference's code), and
every method peft implements against peft's own init function applied on the layer.

Each derivation goes another road than the implementation (eigendecompositions for SVDs, an LU by
hand for LoLDU, the ``nn.Linear`` forward for NLoRA's middle) in float64, on one small linear layer
attached with peft exactly as the harness attaches (the method's alpha and rsLoRA convention), and
compares A, B, the middle and the base offset to float32 tolerance.  Singular vectors are defined up
to sign, so a derived factor is compared after flipping its sign to ours (per component, jointly in B
and A where the reference pairs them)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from _zoo import ALPHA, RANK, TARGETS, attach, base_model
from initbench_baselines.lora import LoRAReversed

from initbench.method.adapters import delta_weight, lora_A_linear, middle_of, trainable_parts
from initbench.method.api import InitContext, lora_layers
from initbench.method.registry import get_method
from initbench.run.attach import lora_settings
from initbench.spec.suite import LoraSpec
from initbench.testing import BUDGET

OUT, IN, R = 12, 10, 3
TOL = dict(atol=2e-5, rtol=1e-4)
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- helpers


def _matrix(out=OUT, inp=IN, seed=0) -> torch.Tensor:
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed))


def _known_svd(out=OUT, inp=IN, seed=1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(G, U, S, V): a matrix G = U diag(S) V^T built from chosen orthonormal factors and well separated
    singular values, so that its SVD is known without computing one."""
    g = torch.Generator().manual_seed(seed)
    k = min(out, inp)
    U = torch.linalg.qr(torch.randn(out, k, generator=g, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(inp, k, generator=g, dtype=torch.float64)).Q
    S = torch.linspace(2.0 * k, 2.0, k, dtype=torch.float64)
    return (U * S) @ V.T, U, S, V


def _svd_by_eigh(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U, S, V) of M (out >= in, full column rank) from the eigendecomposition of M^T M, descending."""
    M = M.double()
    lam, V = torch.linalg.eigh(M.T @ M)
    lam, V = lam.flip(0), V.flip(1)
    S = lam.clamp_min(0).sqrt()
    return (M @ V) / S, S, V


def _flip_to(ref: torch.Tensor, ours: torch.Tensor, dim: int) -> torch.Tensor:
    """The signs (one per component along ``dim``: columns for 1, rows for 0) that turn ``ref`` to ``ours``."""
    dots = (ref.double() * ours.double()).sum(dim=1 - dim)
    return torch.where(dots < 0, -1.0, 1.0).double()


def _paired(B_ref, A_ref, B, A):
    """B_ref, A_ref with each component's sign flipped jointly (column of B, row of A) to match ours."""
    s = _flip_to(B_ref, B, 1)
    return B_ref * s, A_ref * s[:, None]


def _close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    assert torch.allclose(ours.double(), ref.double(), **TOL), float((ours.double() - ref.double()).abs().max())


class _Stats:
    """A stand-in for ``ctx.calibration`` serving given per-layer statistics."""

    def __init__(self, gradients=None, squares=None):
        self.gradients, self.squares = gradients, squares

    def weight_gradients(self):
        return self.gradients

    def weight_gradient_squares(self):
        return self.squares


def _initialized(name: str, W: torch.Tensor, rank: int = R, grad=None, fisher=None, seed: int = 0):
    """(layer, scale, W0) after ``name``'s initialize on one linear layer holding W, attached as the harness does."""
    from peft import LoraConfig, get_peft_model

    method = get_method(name)
    lora = lora_settings(LoraSpec(rank=rank, alpha=ALPHA, target_modules=["0"]), method)
    net = torch.nn.Sequential(torch.nn.Linear(W.shape[1], W.shape[0], bias=False))
    with torch.no_grad():
        net[0].weight.copy_(W)
    torch.manual_seed(seed)
    model = get_peft_model(
        net,
        LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            target_modules=["0"],
            use_rslora=lora.use_rslora,
            **method.lora_config_kwargs(lora),
        ),
    )
    key, layer = lora_layers(model)[0]
    stats = _Stats({key: grad} if grad is not None else None, {key: fisher} if fisher is not None else None)
    method.initialize(model, InitContext(model, lora, seed, stats, None, budget=BUDGET, lr=BUDGET.optimizer.lr))
    return layer, lora.scale, W


def _parts(layer):
    """(A, B, middle values or None, base weight) as float tensors."""
    middle = middle_of(layer)
    return (
        lora_A_linear(layer).weight.detach(),
        layer.lora_B["default"].weight.detach(),
        None if middle is None else middle.values.detach(),
        layer.get_base_layer().weight.detach(),
    )


# ---------------------------------------------------------------- methods written here


def test_lora_reversed_is_init_b_of_the_paper():
    """Hayou, Ghosh & Yu 2024 (arXiv:2406.08447), Section 3: Init[B] sets A = 0 and draws B i.i.d. from a
    centred Gaussian of variance Theta(1/r); the constant here is 1, i.e. N(0, 1/r) -- three times the
    variance 1/(3r) of the uniform mirror of peft's Init[A].  Checked on 80,000 draws (mean, variance,
    Gaussian kurtosis 3 against the uniform's 1.8)."""
    rank = 4
    A, B, new = LoRAReversed().init_layer(torch.zeros(20000, 6), rank, 2.0, None, torch.Generator().manual_seed(7))
    assert new is None and torch.equal(A, torch.zeros(rank, 6)) and B.shape == (20000, rank)
    x = B.double().flatten()
    var = float(x.var())
    assert abs(float(x.mean())) < 0.01
    assert var == pytest.approx(1 / rank, rel=0.03) and abs(var - 1 / (3 * rank)) > 0.5 / rank
    assert float(((x - x.mean()) ** 4).mean() / var**2) == pytest.approx(3.0, abs=0.15)


def test_milora_against_the_minor_singular_triplets():
    """sufenlp/MiLoRA ``svd_init.py`` lines 16-57 (``initialize_lora_layer``, mode "min": the r smallest
    triplets, S / scaling, B = U sqrt(S), A = sqrt(S) V^T) and lines 144-149 (base -= scaling * B A);
    lora_alpha = r there (line 24).  Derived from the eigendecomposition of W^T W."""
    layer, s, W = _initialized("milora", _matrix())
    assert s == 1.0
    A, B, _, W1 = _parts(layer)
    U, S, V = _svd_by_eigh(W)
    Sm = S[-R:] / s  # the r smallest, in the reference's (descending) order
    B_ref, A_ref = _paired(U[:, -R:] * Sm.sqrt(), Sm.sqrt()[:, None] * V[:, -R:].T, B, A)
    _close(B, B_ref)
    _close(A, A_ref)
    _close(W1, W.double() - s * B_ref @ A_ref)


def test_lora_ga_against_the_fork_lora_ga_init():
    """Outsider565/LoRA-GA, peft fork ``peft/src/peft/tuners/lora/layer.py``: lines 207-211 (svd_lowrank of
    the gradient, V = V^T), 221-223 ("ArB2r": B = U[:, r:2r], A = V[:r]), 240-245 ("stable": both times
    out^(1/4) / sqrt(gamma), gamma = 16), 253-276 (base -= scaling * B A).  G has a known SVD here, so each
    factor is known up to the sign of each singular vector (A's and B's are different vectors)."""
    G, U, S, V = _known_svd()
    layer, s, W = _initialized("lora-ga", _matrix(), grad=G.float())
    assert s == pytest.approx(16 / math.sqrt(R))
    A, B, _, W1 = _parts(layer)
    f = OUT**0.25 / math.sqrt(16)
    A_ref, B_ref = f * V[:, :R].T, f * U[:, R : 2 * R]
    _close(A, A_ref * _flip_to(A_ref, A, 0)[:, None])
    _close(B, B_ref * _flip_to(B_ref, B, 1))
    _close(W1, W.double() - s * B.double() @ A.double())


def test_lora_one_against_reinit_lora_modules():
    """YuanheZ/LoRA-One ``run_exp.py`` lines 167-174 (SVD of -G; B = U_r sqrt(S_r) / sqrt(S_1),
    A = sqrt(S_r) V_r^T / sqrt(S_1)) and 185-189 ("stable": both / sqrt(gamma), gamma = 128,
    ``conf/init/gradient.yaml``); no offset of the base weight (lines 211-212 only set A and B)."""
    G, U, S, V = _known_svd()
    layer, s, W = _initialized("lora-one", _matrix(), grad=G.float())
    A, B, _, W1 = _parts(layer)
    root = S[:R].sqrt() / (S[0].sqrt() * math.sqrt(128))
    # -G = (-U) diag(S) V^T
    B_ref, A_ref = _paired(-U[:, :R] * root, root[:, None] * V[:, :R].T, B, A)
    _close(B, B_ref)
    _close(A, A_ref)
    assert torch.equal(W1, W)
    _close(delta_weight(layer), s * (B_ref @ A_ref))


def test_nlora_against_the_fork_nlora_init_and_forward():
    """TracyGuo2001/NLoRA, peft fork ``peft/src/peft/tuners/lora/layer.py`` lines 319-329 (``nlora_init``:
    N = W[:r, :r], A = W[:r, :], B = W[:, :r]) and 457-459 (forward: lora_B(lora_N(lora_A(x))) * scaling,
    each an ``nn.Linear`` without bias); alpha = r (``scripts/run_nlora.sh``).  No offset: the layer
    computes x W^T + s B(N(A x))."""
    W = _matrix()
    for name, trains in (("nlora", {"A", "B", "M"}), ("nlora-inttune", {"M"})):
        layer, s, _ = _initialized(name, W)
        A, B, N, W1 = _parts(layer)
        _close(A, W[:R, :])
        _close(B, W[:, :R])
        _close(N, W[:R, :R])
        assert torch.equal(W1, W) and s == 1.0 and trainable_parts(layer) == trains
        x = _matrix(5, IN, 3)
        linear = torch.nn.functional.linear
        expected = linear(x, W) + s * linear(linear(linear(x, W[:R, :]), W[:R, :R]), W[:, :R])
        with torch.no_grad():
            _close(layer(x), expected)


def test_slora_against_the_fork_slora_init():
    """TracyGuo2001/NLoRA, peft fork ``layer.py`` lines 357-362 (``slora_init``): A and N Kaiming-uniform
    with a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (fan_in: in for A, r for N), B = 0."""
    layer, s, W = _initialized("slora", torch.zeros(6, 30000), rank=4)
    A, B, N, W1 = _parts(layer)
    assert torch.equal(B, torch.zeros(6, 4)) and torch.equal(W1, torch.zeros(6, 30000))
    for X, fan_in in ((A, 30000), (N, 4)):
        bound = 1 / math.sqrt(fan_in)
        assert X.abs().max() <= bound and X.abs().max() > 0.9 * bound
    assert float(A.double().var()) == pytest.approx(1 / (3 * 30000), rel=0.03)


def _lu_partial_pivoting(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(P, L, U) with W = P L U by Gaussian elimination with row pivoting on the largest |entry|."""
    U = W.double().clone()
    m, n = U.shape
    k = min(m, n)
    L = torch.zeros(m, k, dtype=torch.float64)
    perm = list(range(m))
    for j in range(k):
        p = j + int(U[j:, j].abs().argmax())
        U[[j, p]], L[[j, p]] = U[[p, j]], L[[p, j]]
        perm[j], perm[p] = perm[p], perm[j]
        L[j + 1 :, j] = U[j + 1 :, j] / U[j, j]
        U[j + 1 :] -= L[j + 1 :, j, None] * U[j]
        L[j, j] = 1.0
    return torch.eye(m, dtype=torch.float64)[:, perm], L, U[:k]


def test_loldu_against_ldu_decomposition():
    """SKDDJ/LoLDU ``minloldu/loldu.py`` lines 22-29 (``ldu_decomposition``: P, L, U = lu(W), D = diag(U),
    U /= D), 119-128 (L_r = L[:, :r], D_r = D[:r], U_r = U[:r]), 211-216 (base = W - scaling P L_r diag(D_r)
    U_r), 59 and 256 (scaling = alpha / r, alpha = 1); only ``vector_z`` = D_r trains
    (``minloldu/loldu_utils.py`` lines 22-29).  The LU here is by hand."""
    layer, s, W = _initialized("loldu", _matrix())
    assert s == pytest.approx(1 / R)
    A, B, d, W1 = _parts(layer)
    P, L, U = _lu_partial_pivoting(W)
    D = torch.diagonal(U)
    _close(A, (U / D[:, None])[:R])
    _close(B, P @ L[:, :R])
    _close(d, D[:R])
    _close(W1, W.double() - s * (P @ L[:, :R]) @ torch.diag(D[:R]) @ (U / D[:, None])[:R])
    assert trainable_parts(layer) == {"M"}


def test_svfit_against_the_paper():
    """Sun et al. 2024 (arXiv:2409.05926), Section 3: W = U S V^T = W_r + W_e, W_r the top-r part;
    U_r and V_r frozen, only S_r trains, the base keeps W_e.  Derived from the eigendecomposition of W^T W."""
    layer, s, W = _initialized("svfit", _matrix())
    A, B, sv, W1 = _parts(layer)
    U, S, V = _svd_by_eigh(W)
    B_ref, A_ref = _paired(U[:, :R], V[:, :R].T, B, A)
    _close(B, B_ref)
    _close(A, A_ref)
    _close(sv, S[:R] / s)
    _close(W1, (U[:, R:] * S[R:]) @ V[:, R:].T)
    assert trainable_parts(layer) == {"M"}


@pytest.mark.parametrize("name", ["fwsvd", "fisher-svd"])
def test_fwsvd_against_the_weighted_objective(name):
    """Hsu et al. 2022 (arXiv:2207.00112), FWSVD: row importance I_i = sqrt(sum_j F_ij) of the diagonal
    Fisher F, rank-r factors from the SVD of diag(I) W, then diag(I)^-1 back on the left; here split as
    B = diag(1/I) U_r sqrt(S_r / s), A = sqrt(S_r / s) V_r^T and the base keeps W - s B A.  Derived from
    the eigendecomposition of (diag(I) W)^T (diag(I) W).  ``fisher-svd`` is the old name of the same method."""
    F = _matrix(seed=3) ** 2
    layer, s, W = _initialized(name, _matrix(), fisher=F)
    A, B, _, W1 = _parts(layer)
    importance = F.double().sum(1).sqrt()
    U, S, V = _svd_by_eigh(importance[:, None] * W.double())
    root = (S[:R] / s).sqrt()
    B_ref, A_ref = _paired((U[:, :R] / importance[:, None]) * root, root[:, None] * V[:, :R].T, B, A)
    _close(B, B_ref)
    _close(A, A_ref)
    _close(W1, W.double() - s * B_ref @ A_ref)


def test_fwsvd_is_registered_under_its_name_and_the_old_one():
    new, old = get_method("fwsvd"), get_method("fisher-svd")
    assert "FWSVD" in new.summary and "FILA" in new.paper
    assert type(old).__mro__[1] is type(new) and "fwsvd" in old.summary


def test_test_files_cited_by_the_baselines_exist():
    """Every ``tests/<file>.py[::test]`` a baseline's docstring cites is there (issue 14, item 8)."""
    cited = 0
    for path in sorted((REPO / "baselines").glob("*.py")):
        text = " ".join(path.read_text().split())
        for file, test in re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", text):
            cited += 1
            target = REPO / file
            assert target.exists(), f"{path.name} cites {file}, which does not exist"
            assert not test or f"def {test}(" in target.read_text(), f"{path.name} cites {file}::{test}"
    assert cited


# ---------------------------------------------------------------- methods peft implements

PEFT_INIT = {  # method -> (peft LoraLayer function, its arguments after the adapter name, alpha, rsLoRA)
    "lora": ("reset_lora_parameters", (True,), ALPHA, False),
    "gaussian": ("reset_lora_parameters", ("gaussian",), ALPHA, False),
    "pissa": ("pissa_init", ("pissa",), float(RANK), False),
    "pissa-niter-4": ("pissa_init", ("pissa_niter_4",), float(RANK), False),
    "pissa+rslora": ("pissa_init", ("pissa",), float(RANK), True),
    "olora": ("olora_init", (), ALPHA, False),
    "mica": ("mica_init", (), ALPHA, False),
    "orthogonal": ("orthogonal_init", (), ALPHA, False),
}


@pytest.mark.parametrize("name", sorted(PEFT_INIT))
def test_attach_time_inits_equal_peft_init_functions(name, monkeypatch):
    """The harness's attach of a peft-implemented init against peft's own ``LoraLayer`` init function
    applied on a bare layer (attached with ``init_lora_weights=False``) from the same RNG state: A, B and
    the base weight are equal, so the harness passes peft the documented init, rank and alpha and
    nothing overwrites them afterwards."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    function, args, alpha, rslora = PEFT_INIT[name]
    original = getattr(LoraLayer, function)
    states = {}

    def recording(self, *a, **kw):
        states[id(self)] = torch.get_rng_state()
        return original(self, *a, **kw)

    monkeypatch.setattr(LoraLayer, function, recording)
    ours, _, _ = attach(name, seed=3)
    monkeypatch.setattr(LoraLayer, function, original)
    ours_layers = dict(lora_layers(ours))
    assert ours_layers and len(states) == len(ours_layers)

    bare, _ = base_model()
    bare = get_peft_model(
        bare,
        LoraConfig(
            r=RANK,
            lora_alpha=alpha,
            target_modules=list(TARGETS),
            use_rslora=rslora,
            task_type="CAUSAL_LM",
            init_lora_weights=False,
        ),
    )
    for key, layer in lora_layers(bare):
        torch.set_rng_state(states[id(ours_layers[key])])
        getattr(layer, function)("default", *args)
        mine = ours_layers[key]
        assert mine.scaling["default"] == layer.scaling["default"]
        for part in ("lora_A", "lora_B"):
            theirs = getattr(layer, part)["default"].weight
            assert torch.equal(getattr(mine, part)["default"].weight, theirs), (key, part)
        assert torch.equal(mine.get_base_layer().weight, layer.get_base_layer().weight), key
