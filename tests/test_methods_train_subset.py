"""Methods that change what trains (initbench.method.adapters): formulas, step-0 behaviour, what trains,
determinism, calibration accounting, diagnostics, and one smoke run of all of them."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from _zoo import CALIB, RANK, attach, base_model, calibrator, lora_tensors, probe_batch
from conftest import quick_smoke_suite
from initbench_baselines.lora_sb import effective_lr, lora_sb_factors, lora_xs_factors, summed_batch_gradients

from initbench.method.adapters import (
    MiddleA,
    delta_weight,
    freeze,
    insert_middle,
    lora_A_linear,
    middle_of,
    train_only,
    trainable_parts,
)
from initbench.method.api import InitContext, lora_layers
from initbench.method.registry import get_method
from initbench.run.diagnostics import effective_rank
from initbench.run.train import build_optimizer
from initbench.spec.budget import Budget, OptimizerSpec, ScheduleSpec

NEW = ["lora-sb", "lora-xs", "nlora", "nlora-inttune", "slora", "loldu", "svfit", "lora-one", "fwsvd"]
PRESERVING = ["slora", "loldu", "svfit", "fwsvd"]
CHANGED = ["lora-sb", "nlora", "nlora-inttune", "lora-one"]
BUDGET = Budget(
    steps=50, batch_size=4, max_length=48, optimizer=OptimizerSpec(lr=1e-3), schedule=ScheduleSpec(warmup_ratio=0.1)
)
# what trains per layer, as a function of (out, in, r)
TRAINS = {
    "lora-sb": ({"M"}, lambda o, i, r: r * r),
    "lora-xs": ({"M"}, lambda o, i, r: r * r),
    "nlora": ({"A", "B", "M"}, lambda o, i, r: r * i + o * r + r * r),
    "nlora-inttune": ({"M"}, lambda o, i, r: r * r),
    "slora": ({"A", "B", "M"}, lambda o, i, r: r * i + o * r + r * r),
    "loldu": ({"M"}, lambda o, i, r: r),
    "svfit": ({"M"}, lambda o, i, r: r),
    "lora-one": ({"A", "B"}, lambda o, i, r: r * i + o * r),
    "fwsvd": ({"A", "B"}, lambda o, i, r: r * i + o * r),
}


def _matrix(out=12, inp=10, seed=0):
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed))


def _attach(name, **kw):
    return attach(name, budget=BUDGET, lr=BUDGET.optimizer.lr, **kw)


def _logits(model):
    with torch.no_grad():
        return model(**probe_batch()).logits


@pytest.fixture(scope="module")
def base_logits():
    model, _ = base_model()
    return _logits(model)


@pytest.fixture(scope="module")
def attached():
    """Each new method attached once with seed 0 (the model, spend, modified layers)."""
    return {name: _attach(name) for name in NEW}


# ---------------------------------------------------------------- the adapter helpers on peft


def _one_layer(seed=0, dropout=0.0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(10, 12))
    model = get_peft_model(net, LoraConfig(r=3, lora_alpha=6, target_modules=["0"], lora_dropout=dropout))
    layer = lora_layers(model)[0][1]
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
    return model, layer


def test_insert_middle_forward_delta_merge_unmerge():
    model, layer = _one_layer()
    M = _matrix(3, 3, 5)
    insert_middle(layer, M)
    assert isinstance(layer.lora_A["default"], MiddleA)
    A, B, W = lora_A_linear(layer).weight.detach(), layer.lora_B["default"].weight.detach(), layer.base_layer.weight
    expected_delta = 2.0 * B @ M @ A
    x = _matrix(5, 10, 6)
    with torch.no_grad():
        out = model(x)
    assert torch.allclose(out, x @ (W + expected_delta).T + layer.base_layer.bias, atol=1e-5)
    assert torch.allclose(layer.get_delta_weight("default"), expected_delta, atol=1e-6)
    assert torch.allclose(delta_weight(layer), expected_delta, atol=1e-6)
    W0 = W.detach().clone()
    layer.merge()
    assert torch.allclose(layer.base_layer.weight, W0 + expected_delta, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(model(x), out, atol=1e-5)
    layer.unmerge()
    assert torch.allclose(layer.base_layer.weight, W0, atol=1e-5)
    keys = set(model.state_dict())
    assert any(k.endswith("lora_A.default.middle.weight") for k in keys)
    assert any(k.endswith("lora_B.default.weight") for k in keys)


def test_diagonal_middle_is_a_vector():
    model, layer = _one_layer()
    d = torch.tensor([1.0, -2.0, 0.5])
    middle = insert_middle(layer, d)
    assert middle.is_diagonal and middle.values.shape == (3,)
    A, B = lora_A_linear(layer).weight.detach(), layer.lora_B["default"].weight.detach()
    assert torch.allclose(delta_weight(layer), 2.0 * B @ torch.diag(d) @ A, atol=1e-6)
    train_only(model, ["M"])
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 3


def test_frozen_parts_stay_frozen_through_peft_toggles():
    """peft's set_adapter / disable_adapter() switch requires_grad on for every adapter parameter:
    a frozen part is a buffer, so it does not come back."""
    model, layer = _one_layer()
    insert_middle(layer, torch.eye(3))
    freeze(layer, "A")
    freeze(layer, "B")
    with model.disable_adapter():
        pass
    model.base_model.set_adapter("default")
    assert trainable_parts(layer) == {"M"}
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "base_model.model.0.lora_A.default.middle.weight"
    ]
    # the frozen tensors keep their values and state-dict keys
    assert "base_model.model.0.lora_B.default.weight" in model.state_dict()


def test_set_lora_writes_A_under_a_middle():
    model, layer = _one_layer()
    insert_middle(layer, torch.eye(3) * 2)
    ctx = InitContext(model, None, 0, None, None, budget=BUDGET, lr=BUDGET.optimizer.lr)
    A, B = _matrix(3, 10, 1), _matrix(12, 3, 2)
    ctx.set_lora("0", layer, A, B)
    assert torch.equal(lora_A_linear(layer).weight.detach(), A)
    assert torch.allclose(layer.lora_A["default"].weight, 2 * A)


def test_context_needs_budget_and_rate():
    """Issue 15: a context always carries the run's budget and rate (no None to guess from)."""
    model, _ = _one_layer()
    with pytest.raises(TypeError, match="budget"):
        InitContext(model, None, 0, None, None, lr=0.5)
    with pytest.raises(TypeError, match="lr"):
        InitContext(model, None, 0, None, None, budget=BUDGET)
    ctx = InitContext(model, None, 0, None, None, budget=BUDGET, lr=0.5)
    assert ctx.budget is BUDGET and ctx.lr == 0.5


# ---------------------------------------------------------------- transcriptions on a small matrix


def test_lora_sb_transcription():
    G, r, eff = _matrix(16, 12, 1), 3, 0.01
    torch.manual_seed(3)
    U, S, V = torch.svd_lowrank((-eff * torch.sign(G)).T, q=r, niter=10)
    torch.manual_seed(3)
    A, B, R = lora_sb_factors(G, r, eff)
    assert torch.equal(A, U.T) and torch.equal(B, V) and torch.equal(R, torch.diag(S))
    assert A.shape == (r, 12) and B.shape == (16, r)
    # orientation: B R A approximates dW = -eff sign(G) itself (not its transpose)
    dW = -eff * torch.sign(G)
    assert torch.allclose(B @ R @ A, (U @ torch.diag(S) @ V.T).T, atol=1e-6)
    assert torch.linalg.norm(dW - B @ R @ A) < torch.linalg.norm(dW)
    assert effective_lr(1e-3, 0.1, 150, 3) == pytest.approx(1e-3 / 5)  # 0.1 x ceil(150 / 3) loader batches
    assert effective_lr(1e-3, 0.0, 150, 3) == 1e-3  # the documented no-warmup fallback


def test_lora_xs_transcription():
    W, r = _matrix(), 3
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    A, B, R = lora_xs_factors(W, r, torch.Generator().manual_seed(2))
    assert torch.allclose(B, U[:, :r]) and torch.allclose(A, torch.diag(S[:r]) @ Vh[:r], atol=1e-6)
    assert torch.equal(R, torch.randn(r, r, generator=torch.Generator().manual_seed(2)) * 1e-5)


def test_effective_rank():
    assert effective_rank(torch.zeros(4, 3)) == 0.0
    assert effective_rank(torch.eye(4)) == pytest.approx(4.0)
    assert effective_rank(torch.outer(torch.ones(5), torch.arange(1.0, 4.0))) == pytest.approx(1.0)
    p = torch.tensor([3.0, 1.0]) / 4
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(float(torch.exp(-(p * p.log()).sum())))


# ---------------------------------------------------------------- on the tiny model, as the harness builds it


@pytest.mark.parametrize("name", PRESERVING)
def test_starts_at_the_base_model(name, attached, base_logits, record_property):
    """Function-preserving family (max |logit difference| recorded as ``max_abs_logit_diff``)."""
    model, _, _ = attached[name]
    ours = _logits(model)
    record_property("max_abs_logit_diff", float((ours - base_logits).abs().max()))
    assert torch.allclose(ours, base_logits, atol=1e-4, rtol=1e-4), float((ours - base_logits).abs().max())


def test_lora_xs_starts_at_the_base_model_up_to_its_noise(attached, base_logits):
    model, _, _ = attached["lora-xs"]
    assert torch.allclose(_logits(model), base_logits, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("name", CHANGED)
def test_does_not_start_at_the_base_model(name, attached, base_logits, record_property):
    """The methods that start moved (LoRA-SB, NLoRA, LoRA-One) differ from the base model exactly by their
    adapter's product: no base offset, and the base model with every W <- W + scale B [M] A gives the
    same logits (max |logit difference| from the base model recorded as ``max_abs_logit_diff``)."""
    model, _, modified = attached[name]
    assert not modified  # no base offset
    ours = _logits(model)
    record_property("max_abs_logit_diff", float((ours - base_logits).abs().max()))
    assert (ours - base_logits).abs().max() > 1e-4
    merged, _ = base_model()
    with torch.no_grad():
        for key, layer in lora_layers(model):
            merged.get_submodule(key.removeprefix("base_model.model.")).weight += delta_weight(layer)
    assert torch.allclose(_logits(merged), ours, atol=1e-4, rtol=1e-4)


def test_lora_one_starts_along_the_negative_gradient(attached):
    """LoRA-One's documented start: W + scale B A with B A the rank-r part of -G (G the mean calibration
    gradient, the base model's), so the step has rank r and a positive inner product with -G."""
    model, _, _ = attached["lora-one"]
    grads = calibrator(model).weight_gradients()
    for name, layer in lora_layers(model):
        delta = delta_weight(layer)
        assert torch.linalg.matrix_rank(delta) == RANK
        assert float((delta * -grads[name]).sum()) > 0, name


@pytest.mark.parametrize("name", NEW)
def test_only_the_declared_tensors_train(name, attached):
    model = copy.deepcopy(attached[name][0])
    parts, per_layer = TRAINS[name]
    expected = 0
    for _, layer in lora_layers(model):
        assert trainable_parts(layer) == parts
        A = lora_A_linear(layer).weight
        expected += per_layer(layer.lora_B["default"].weight.shape[0], A.shape[1], A.shape[0])
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == expected
    method = get_method(name)
    assert method.build_optimizer(model, 1e-3, OptimizerSpec()) is None  # the harness's optimizer
    optimizer = build_optimizer(trainable, BUDGET, 1e-3)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in trainable}
    # and one step moves exactly them
    before = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    model.train()
    batch = next(iter(calibrator(model).batches()))
    model(**batch).loss.backward()
    optimizer.step()
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    names = {k for k, p in model.named_parameters() if p.requires_grad}
    assert moved <= names and moved


def test_middle_shapes(attached):
    for name, kind in (("lora-sb", (RANK, RANK)), ("loldu", (RANK,)), ("svfit", (RANK,)), ("nlora", (RANK, RANK))):
        model, _, _ = attached[name]
        for _, layer in lora_layers(model):
            assert tuple(middle_of(layer).values.shape) == kind
    model, _, _ = attached["lora-one"]
    assert all(middle_of(layer) is None for _, layer in lora_layers(model))


def test_lora_sb_starts_at_the_rank_r_simulated_step(attached):
    model, _, _ = attached["lora-sb"]
    grads = summed_batch_gradients(calibrator(model).batch_weight_gradients(batch_size=3))  # eg_bs 3 (math)
    eff = effective_lr(BUDGET.optimizer.lr, BUDGET.schedule.warmup_ratio, BUDGET.steps * BUDGET.batch_size, 3)
    for name, layer in lora_layers(model)[:3]:
        dW = -eff * torch.sign(grads[name])
        delta = delta_weight(layer)
        # a rank-r approximation of the simulated step (svd_lowrank with q = r, as the reference)
        assert torch.linalg.matrix_rank(delta) == RANK
        assert torch.linalg.norm(dW - delta) < torch.linalg.norm(dW)
        assert float((delta * dW).sum()) > 0.5 * float(torch.linalg.norm(delta)) ** 2  # ~ a projection of dW
        assert layer.scaling["default"] == 1.0


def test_nlora_starts_at_the_nystrom_offset(attached):
    model, _, _ = attached["nlora"]
    base, _ = base_model()
    layer = dict(lora_layers(model))["base_model.model.model.layers.0.self_attn.q_proj"]
    W = base.model.layers[0].self_attn.q_proj.weight
    expected = layer.scaling["default"] * W[:, :RANK] @ W[:RANK, :RANK] @ W[:RANK, :]
    assert torch.allclose(delta_weight(layer), expected, atol=1e-5)


def test_scaling_conventions(attached):
    scale = {name: lora_layers(attached[name][0])[0][1].scaling["default"] for name in NEW}
    assert scale["lora-sb"] == 1.0 and scale["svfit"] == 1.0 and scale["nlora"] == 1.0
    assert scale["loldu"] == pytest.approx(1 / RANK)
    assert scale["lora-one"] == pytest.approx(16 / math.sqrt(RANK))


@pytest.mark.parametrize("name", NEW)
def test_same_seed_same_tensors(name, attached):
    a = lora_tensors(attached[name][0])
    b = lora_tensors(_attach(name)[0])
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_seed_changes_random_inits():
    for name in ("slora", "lora-xs", "lora-sb"):
        a, b = lora_tensors(_attach(name, seed=0)[0]), lora_tensors(_attach(name, seed=1)[0])
        assert any(not torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("name", NEW)
def test_calibration_accounting(name, attached):
    _, spend, _ = attached[name]
    if name in ("lora-sb", "lora-one", "fwsvd"):
        assert spend.calibration_examples == CALIB.examples
        batch = 3 if name == "lora-sb" else CALIB.batch_size  # LoRA-SB batches as its reference (eg_bs 3)
        assert spend.calibration_forward_passes == math.ceil(CALIB.examples / batch)
        assert spend.calibration_backward_passes == spend.calibration_forward_passes
        assert spend.calibration_tokens > 0 and spend.flops > 0
    else:
        assert spend.calibration_examples == 0 and spend.flops == 0


def test_weight_gradient_squares_against_autograd():
    model, _ = base_model()
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=RANK, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    cal = calibrator(model)
    squares = cal.weight_gradient_squares()
    assert cal.spend.calibration_backward_passes == CALIB.examples // CALIB.batch_size
    name, layer = lora_layers(model)[0]
    weight = layer.get_base_layer().weight
    weight.requires_grad_(True)
    total = 0
    with model.disable_adapter():
        for batch in calibrator(model).batches(backward=True):
            (g,) = torch.autograd.grad(model(**batch).loss, weight)
            total = total + g * g
    weight.requires_grad_(False)
    assert torch.allclose(squares[name], total / (CALIB.examples // CALIB.batch_size), rtol=1e-4, atol=1e-10)


# ---------------------------------------------------------------- end to end, with the diagnostics on


def test_every_new_method_runs_end_to_end_with_diagnostics(tmp_path, monkeypatch):
    from initbench.cli import main
    from initbench.selection.counted import read_results
    from initbench.store.results import validate

    monkeypatch.setenv("INITBENCH_DIAGNOSTICS", "1")
    suite = quick_smoke_suite(tmp_path)
    code = main(
        [
            "evaluate",
            "--suite",
            str(suite),
            *sum((["--method", m] for m in NEW + ["lora"]), []),
            "--seeds",
            "0",
            "--out",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 0
    assert validate(tmp_path / "runs") == []
    rows = {r["method"]: r for r in read_results(tmp_path / "runs").to_pylist()}
    assert set(rows) == set(NEW) | {"lora"}
    n_layers = 14
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row["error"])
        assert row["final_update_erank"] > 0 and row["relative_weight_change"] > 0, name
    assert rows["lora"]["init_update_erank"] == 0.0  # B = 0
    assert rows["loldu"]["trainable_params"] == n_layers * RANK
    assert rows["svfit"]["trainable_params"] == n_layers * RANK
    assert rows["lora-sb"]["trainable_params"] == n_layers * RANK * RANK
    assert rows["nlora-inttune"]["trainable_params"] == n_layers * RANK * RANK
    for name in ("lora-sb", "lora-xs", "nlora", "lora-one"):
        assert 1.0 <= rows[name]["init_update_erank"] <= RANK + 1e-6, name
    for name in ("loldu", "svfit", "fwsvd"):
        assert rows[name]["base_weights_modified"], name
    for name in CHANGED:
        assert not rows[name]["base_weights_modified"], name


def test_diagnostics_off_leaves_nulls(tmp_path, monkeypatch):
    from initbench.cli import main
    from initbench.selection.counted import read_results

    monkeypatch.delenv("INITBENCH_DIAGNOSTICS", raising=False)
    suite = quick_smoke_suite(tmp_path, steps=1, limit=1)
    assert (
        main(["evaluate", "--suite", str(suite), "--method", "loldu", "--seeds", "0", "--out", str(tmp_path / "runs")])
        == 0
    )
    row = read_results(tmp_path / "runs").to_pylist()[0]
    assert row["status"] == "ok"
    assert row["init_update_erank"] is None and row["relative_weight_change"] is None
