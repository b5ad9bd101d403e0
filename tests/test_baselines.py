"""The baseline zoo: function preservation, agreement with peft, determinism, budgets, end to end."""

from __future__ import annotations

import math
import os

import pytest
import torch
from _zoo import CALIB, RANK, attach, base_model, calibrator, lora_tensors, probe_batch
from conftest import SHARED_DATA, quick_smoke_suite

from initbench.method.registry import PluginError, get_method
from initbench.spec.budget import OptimizerSpec

PRESERVING = [
    "lora",
    "gaussian",
    "lora-reversed",
    "pissa",
    "pissa-niter-4",
    "milora",
    "olora",
    "mica",
    "corda-ipm",
    "corda-kpm",
    "lora-ga",
    "lora-ga-peft",
    "eva",
    "orthogonal",
    "lora+rslora",
    "pissa+rslora",
    "milora+lora-plus",
]
CALIBRATING = ["lora-ga", "lora-ga-peft", "eva", "corda-ipm", "corda-kpm"]


@pytest.fixture(autouse=True)
def _nq_open(request, monkeypatch):
    """corda-kpm calibrates on NQ-open questions: read them from ../shared/data (its cases skip without)."""
    if (SHARED_DATA / "nq_open" / "NQ-open.dev.jsonl").is_file():
        monkeypatch.setenv("INITBENCH_DATA_DIR", str(SHARED_DATA))
    elif "corda-kpm" in request.node.name or "corda_kpm" in request.node.name:
        pytest.skip(f"NQ-open not found under {SHARED_DATA} (corda-kpm's calibration data)")


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def base_logits():
    model, _ = base_model()
    return logits(model, probe_batch())


@pytest.mark.parametrize("name", PRESERVING)
def test_starts_at_the_base_model(name, base_logits, record_property):
    """Function-preserving family: step-0 logits equal the base model's (the max |difference| is recorded
    as the test's ``max_abs_logit_diff`` property, e.g. ``--junitxml``)."""
    model, _, modified = attach(name)
    ours = logits(model, probe_batch())
    record_property("max_abs_logit_diff", float((ours - base_logits).abs().max()))
    assert torch.allclose(ours, base_logits, atol=1e-4, rtol=1e-4), float((ours - base_logits).abs().max())
    # the adapter is really in the forward pass: some factor is non-zero
    assert any(t.abs().sum() > 0 for k, t in lora_tensors(model).items() if "lora_" in k)


def test_orthogonal_is_nonzero_on_both_sides_yet_BA_vanishes():
    """peft's orthogonal init: A != 0 and B != 0, but BA = 0 (distinct rows of an orthogonal matrix)."""
    model, _, _ = attach("orthogonal")
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert A.abs().min() > 0 or A.abs().sum() > 0
    assert B.abs().sum() > 0
    assert (B @ A).abs().max() < 1e-6 * (B.norm() * A.norm())


# ---------------------------------------------------------------- agreement with peft's own API
# (the attach-time inits: tests/test_baselines_reference.py::test_attach_time_inits_equal_peft_init_functions)


def test_corda_ipm_equals_peft_preprocess_corda():
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.config import CordaConfig
    from peft.tuners.lora.corda import preprocess_corda

    ours, _, _ = attach("corda-ipm")
    model, _ = base_model()
    config = LoraConfig(
        r=RANK,
        lora_alpha=RANK,
        target_modules=list(_targets()),
        task_type="CAUSAL_LM",
        init_lora_weights="corda",
        corda_config=CordaConfig(corda_method="ipm"),
    )

    def run_model():
        with torch.no_grad():
            for batch in calibrator(model).batches():
                for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
                    model(input_ids=ids[mask.bool()][None])

    preprocess_corda(model, config, run_model=run_model)
    theirs = get_peft_model(model, config)
    _assert_same(lora_tensors(ours), lora_tensors(theirs), atol=1e-5)


def test_corda_kpm_takes_the_minor_end_of_the_spectrum():
    ipm, _, _ = attach("corda-ipm")
    kpm, _, _ = attach("corda-kpm")
    name = "model.layers.0.mlp.down_proj.lora_B.default.weight"
    # sqrt(S) sits in B's column norms: kpm's are smaller than ipm's
    assert lora_tensors(kpm)[name].norm() < lora_tensors(ipm)[name].norm()


def test_eva_matches_exact_pca_on_one_batch():
    """With one calibration batch, no redistribution (rho=1) and exact SVD, EVA's A is the top-r
    principal directions of the layer's (label-masked) inputs."""
    from initbench_baselines.eva import EVA

    spec = type(CALIB)(examples=4, batch_size=4)
    method = EVA(rho=1.0, lowrank=False)
    method.name = "eva"
    ours, spend, _ = attach(method, calib=spec)
    assert spend.calibration_examples == 4
    base, _ = base_model()
    batch = next(iter(calibrator(base, calib=spec).batches()))
    mask = batch["attention_mask"].bool() & (batch["labels"] != -100)
    layer = base.model.layers[1].mlp.down_proj
    seen = {}
    handle = layer.register_forward_hook(lambda m, a, o: seen.update(x=a[0][mask]))
    with torch.no_grad():
        base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    handle.remove()
    x = seen["x"] - seen["x"].mean(0)
    Vh = torch.linalg.svd(x, full_matrices=False).Vh[:RANK]
    A = lora_tensors(ours)["model.layers.1.mlp.down_proj.lora_A.default.weight"]
    assert torch.allclose((A @ Vh.T).abs(), torch.eye(RANK), atol=1e-3)
    assert lora_tensors(ours)["model.layers.1.mlp.down_proj.lora_B.default.weight"].abs().sum() == 0


def test_eva_redistributes_ranks_and_keeps_alpha_over_r():
    model, _, _ = attach("eva")
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    ranks = [m.r["default"] for m in layers]
    assert sum(ranks) <= 14 * RANK and max(ranks) <= 2 * RANK
    alpha = get_method("eva").default_alpha(RANK)
    for m in layers:
        assert m.scaling["default"] == pytest.approx(alpha / RANK)


# ---------------------------------------------------------------- determinism and budgets


@pytest.mark.parametrize("name", ["lora-reversed", "pissa-niter-4", "orthogonal", "lora-ga", "eva", "corda-kpm"])
def test_same_seed_same_tensors(name):
    a, _, _ = attach(name, seed=5)
    b, _, _ = attach(name, seed=5)
    _assert_same(lora_tensors(a), lora_tensors(b), atol=0.0)


@pytest.mark.parametrize("name", CALIBRATING)
def test_calibration_spends_exactly_the_allowance(name):
    _, spend, _ = attach(name)
    backward = name.startswith("lora-ga")
    assert spend.calibration_examples == CALIB.examples
    assert spend.calibration_forward_passes == CALIB.examples // CALIB.batch_size
    assert spend.calibration_backward_passes == (spend.calibration_forward_passes if backward else 0)
    assert spend.calibration_tokens > 0 and spend.flops > 0


def test_data_free_methods_spend_nothing():
    for name in ("lora", "pissa", "milora", "lora-reversed"):
        _, spend, _ = attach(name)
        assert spend.calibration_examples == 0 and spend.flops == 0


# ---------------------------------------------------------------- variants


def test_variant_names_and_rslora_scaling():
    method = get_method("pissa+rslora+lora-plus")
    assert method.name == "pissa+rslora+lora-plus"
    model, _, _ = attach(method)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.use_rslora["default"] and layer.lora_alpha["default"] == RANK
    assert layer.scaling["default"] == pytest.approx(RANK / math.sqrt(RANK))
    assert model.peft_config["default"].use_rslora and not model.peft_config["default"].alpha_pattern


def test_lora_plus_optimizer_groups():
    method = get_method("lora+lora-plus")
    model, _, _ = attach(method)
    optimizer = method.build_optimizer(model, 1e-3, OptimizerSpec())
    lrs = sorted(g["lr"] for g in optimizer.param_groups if g["params"])
    assert lrs == [pytest.approx(1e-3), pytest.approx(16e-3)]


def test_unknown_variant_is_named():
    with pytest.raises(PluginError, match="lora-minus"):
        get_method("lora+lora-minus")
    with pytest.raises(PluginError, match="only to methods that train LoRA"):
        get_method("full-ft+rslora")


# ---------------------------------------------------------------- end to end through the CLI

ALL = [
    "lora",
    "gaussian",
    "lora-reversed",
    "pissa",
    "pissa-niter-4",
    "milora",
    "olora",
    "mica",
    "orthogonal",
    "lora-ga",
    "lora-ga-peft",
    "eva",
    "corda-ipm",
    "corda-kpm",
    "loftq",
    "full-ft",
    "lora+rslora+lora-plus",
]


def test_every_method_runs_end_to_end(tmp_path):
    from initbench.cli import main
    from initbench.method.registry import method_names
    from initbench.selection.counted import read_results

    assert set(ALL) - {"lora+rslora+lora-plus"} <= set(method_names())
    methods = [m for m in ALL if m != "corda-kpm" or "INITBENCH_DATA_DIR" in os.environ]  # see _nq_open
    suite = quick_smoke_suite(tmp_path)
    code = main(
        [
            "evaluate",
            "--suite",
            str(suite),
            *sum((["--method", m] for m in methods), []),
            "--seeds",
            "0",
            "--out",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 0
    rows = read_results(tmp_path / "runs").to_pylist()
    status = {r["method"]: (r["status"], r.get("error") or "") for r in rows}
    assert set(status) == set(methods)
    for name, (state, error) in status.items():
        assert state == "ok", (name, error)


# ---------------------------------------------------------------- helpers


def _targets():
    from _zoo import TARGETS

    return TARGETS


def _assert_same(ours: dict, theirs: dict, atol: float = 0.0):
    assert ours.keys() == theirs.keys()
    for key in ours:
        if atol == 0.0:
            assert torch.equal(ours[key], theirs[key]), key
        else:
            assert torch.allclose(ours[key], theirs[key], atol=atol, rtol=1e-5), key
