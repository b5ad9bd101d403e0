"""Baselines held to their references (issue 14, items 1, 2, 3, 6, 7).

Every expectation here is derived from the reference's own math (or computed by the library the
reference calls: sklearn for LoRA-XS, peft for CorDA and EVA), never by re-running our functions; each
test names the reference file and lines it was derived from.  Tiny model, seconds per test.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from _zoo import CALIB, DEFAULT_BUDGET, RANK, TARGETS, base_model, examples, lora_tensors
from conftest import SHARED_DATA, quick_smoke_suite

from initbench.inputs.data import collate
from initbench.inputs.datasets_io import use_data_dir
from initbench.inputs.models import linear_params
from initbench.method.adapters import delta_weight, lora_A_linear, middle_of
from initbench.method.api import lora_layers
from initbench.method.calibration import Calibrator
from initbench.method.registry import get_method
from initbench.run.attach import MethodFailure, attach_and_initialize, lora_settings
from initbench.spec.budget import Budget, BudgetExceeded, CalibrationSpec, ScheduleSpec, Spend
from initbench.spec.suite import LoraSpec, SuiteError, load_suite

NQ_OPEN = SHARED_DATA / "nq_open" / "NQ-open.dev.jsonl"


def run_init(
    method, *, family: str = "", budget: Budget = DEFAULT_BUDGET, calib: CalibrationSpec = CALIB, seed: int = 0
):
    """(peft model, spend) as the harness initializes them, for a suite of task ``family``."""
    if isinstance(method, str):
        method = get_method(method)
    model, tokenizer = base_model()
    spend = Spend()
    lora = lora_settings(LoraSpec(rank=RANK, alpha=8.0, target_modules=list(TARGETS)), method, family)
    model, _ = attach_and_initialize(
        model,
        tokenizer,
        method,
        lora,
        seed=seed,
        examples=examples(),
        budget=dataclasses.replace(budget, calibration=calib),
        lr=budget.optimizer.lr,
        spend=spend,
        base_params=linear_params(model),
        device=torch.device("cpu"),
        family=family,
    )
    return model, spend


def calibration_examples(calib: CalibrationSpec = CALIB, seed: int = 0) -> list[dict[str, list[int]]]:
    """The run's calibration draw (which examples, in which order: the harness's choice, not under test)."""
    model, tokenizer = base_model()
    return Calibrator(model, examples(), calib, Spend(), 1, seed, tokenizer.pad_token_id, torch.device("cpu")).examples


# ---------------------------------------------------------------- item 7: reference calibration amounts


def test_the_run_takes_min_of_reference_and_allowance_and_records_both():
    _, spend = run_init("lora-ga", calib=CalibrationSpec(examples=16, batch_size=4))
    assert spend.calibration_examples == 8  # LoRA-GA's reproduction: bsz 1 x iters 8
    assert spend.method_info == {"calibration_reference_examples": 8, "calibration_granted_examples": 8}
    _, spend = run_init("lora-one", calib=CalibrationSpec(examples=16, batch_size=4))
    assert spend.calibration_examples == 8
    _, spend = run_init("corda-ipm")  # reference 256 > allowance 8
    assert spend.calibration_examples == 8
    assert spend.method_info == {"calibration_reference_examples": 256, "calibration_granted_examples": 8}
    _, spend = run_init("lora-ga+rslora", calib=CalibrationSpec(examples=16, batch_size=4))  # variants delegate
    assert spend.calibration_examples == 8
    _, spend = run_init("lora")  # data-free: nothing recorded
    assert spend.method_info == {} and spend.columns()["method_info"] is None


def test_calibration_cycles_through_a_split_smaller_than_the_request():
    """peft's EVA and LoRA-SB's 50/170 examples may exceed a small split: batches wrap around
    (``itertools.cycle``), every pass charged."""
    model, tokenizer = base_model()
    spend = Spend()
    calibrator = Calibrator(
        model,
        examples()[:5],
        CalibrationSpec(examples=12, batch_size=4),
        spend,
        1,
        0,
        tokenizer.pad_token_id,
        torch.device("cpu"),
    )
    sizes = [len(batch["input_ids"]) for batch in calibrator.batches()]
    assert sizes == [4, 4, 4] and spend.calibration_examples == 12
    with pytest.raises(BudgetExceeded, match="budget.calibration.examples"):
        calibrator.charge(1, 10)


def test_method_info_lands_in_the_results(tmp_path):
    from initbench.cli import main
    from initbench.selection.counted import read_results

    suite = quick_smoke_suite(tmp_path)
    assert (
        main(
            [
                "evaluate",
                "--suite",
                str(suite),
                "--method",
                "lora-sb",
                "--method",
                "lora",
                "--seeds",
                "0",
                "--out",
                str(tmp_path / "runs"),
            ]
        )
        == 0
    )
    rows = {r["method"]: r for r in read_results(tmp_path / "runs").to_pylist()}
    info = json.loads(rows["lora-sb"]["method_info"])
    assert info["calibration_reference_examples"] == 50 and info["calibration_granted_examples"] == 8
    assert rows["lora"]["method_info"] is None


# ---------------------------------------------------------------- suite family (items 2, 3)


def test_suite_family_is_checked_and_hashed_only_when_declared(tmp_path):
    import yaml

    from initbench.spec.suite import builtin_suite_dir

    spec = yaml.safe_load((builtin_suite_dir() / "smoke.yaml").read_text())
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**spec, "family": "arithmetic"}))
    with pytest.raises(SuiteError, match=r"bad.yaml: key 'family' must be one of math, commonsense, glue"):
        load_suite(str(path))
    assert "family" not in load_suite("smoke").spec_dict()  # undeclared: the hash is unchanged
    assert load_suite("math").family == "math" and load_suite("commonsense").family == "commonsense"
    assert load_suite("math").spec_dict()["family"] == "math"


# ---------------------------------------------------------------- item 2: LoRA-SB


def test_lora_sb_eff_lr_on_math_is_the_reference_formula():
    """lora-sb train_arithmetic.py lines 95-97 (commit 37b33d4): eff_lr = lr / (warmup_ratio *
    len(train_loader) * epochs), train_loader of batch eg_bs = 3 (line 224) over the training set.
    tasks/math.yaml trains one epoch over its 20,000 rows: len(train_loader) = ceil(20000 / 3)."""
    budget = load_suite("math").budget
    expected = 2e-4 / (0.03 * math.ceil(20000 / 3))  # 1.0e-6; the old lr / (warmup * steps) was 5.3e-6
    _, spend = run_init("lora-sb", family="math", budget=budget, calib=CalibrationSpec(examples=6, batch_size=8))
    assert spend.method_info["lora_sb_eff_lr"] == pytest.approx(expected, rel=1e-12)
    assert spend.method_info["calibration_reference_examples"] == 50
    assert get_method("lora-sb").reference_calibration_examples("commonsense") == 170  # train_cr.py line 107


def test_lora_sb_equals_the_reference_derivation():
    """lora-sb utils/gradient_utils.py line 104: each batch of eg_bs = 3 examples backpropagates
    loss / n_b, summed over batches; line 141: dW = -eff_lr * sign(sum); utils/svd_utils.py line 29:
    svd_lowrank(dW^T, q=r): dW^T ~ U diag(S) V^T, lora_A = U^T, lora_B = V, latent = diag(S)
    (utils/initialization_utils.py lines 108-133).  Derived here with plain autograd on the base model."""
    budget = dataclasses.replace(DEFAULT_BUDGET, schedule=ScheduleSpec(warmup_ratio=0.5))
    ours, spend = run_init("lora-sb", family="math", budget=budget)
    assert spend.calibration_examples == 8 and spend.calibration_backward_passes == 3  # 3 + 3 + 2
    eff = budget.optimizer.lr / (0.5 * math.ceil(budget.steps * budget.batch_size / 3))
    base, _ = base_model()
    base.requires_grad_(True)
    chosen = calibration_examples()
    for start in range(0, 8, 3):
        chunk = chosen[start : start + 3]
        (base(**collate(chunk, 0)).loss / len(chunk)).backward()
    for name, layer in lora_layers(ours):
        weight = base.get_submodule(name.removeprefix("base_model.model.")).weight
        dW = -eff * torch.sign(weight.grad)
        A = lora_A_linear(layer, "default").weight.detach()
        B = layer.lora_B["default"].weight.detach()
        R = middle_of(layer).matrix().detach()
        eye = torch.eye(RANK)
        torch.testing.assert_close(B.T @ B, eye, atol=1e-5, rtol=0)
        torch.testing.assert_close(B.T @ dW @ A.T, R, atol=1e-6 * float(dW.norm()), rtol=1e-5)
        U, S, Vh = torch.linalg.svd(dW, full_matrices=False)  # Eckart-Young: the best rank-r error
        best = torch.linalg.norm(dW - U[:, :RANK] @ torch.diag(S[:RANK]) @ Vh[:RANK])
        assert torch.linalg.norm(dW - delta_weight(layer).detach()) <= 1.02 * best + 1e-9, name


# ---------------------------------------------------------------- item 3: LoRA-XS


def test_lora_xs_alpha_follows_the_paper_per_task_family():
    """LoRA-XS main_math_tuning.py line 136 (alpha = r), README.md lines 111-112 (commonsense: rank 32,
    alpha 64), scripts/run_glue.py line 41 (alpha 16), commit e50b1a8."""
    spec = LoraSpec(rank=8, alpha=3.0, target_modules=["q_proj"])
    alpha = {
        family: lora_settings(spec, get_method("lora-xs"), family).alpha
        for family in ("math", "commonsense", "glue", "")
    }
    assert alpha == {"math": 8.0, "commonsense": 16.0, "glue": 16.0, "": 3.0}
    assert lora_settings(spec, get_method("lora-xs+rslora"), "commonsense").alpha == 16.0
    assert lora_settings(dataclasses.replace(spec, pin_alpha=True), get_method("lora-xs"), "math").alpha == 3.0


def test_lora_xs_equals_sklearn_truncated_svd_of_w_transpose():
    """LoRA-XS utils/initialization_utils.py line 95: get_replacement_module(weight=W^T); utils/svd_utils.py
    lines 6-18: TruncatedSVD(n_components=r, n_iter=10, random_state=42), enc = transform(W^T),
    dec = components_; lines 110 and 114: lora_B = dec^T, lora_A = enc^T; line 116: latent ~ N(0, 1e-5^2)."""
    from initbench_baselines.lora_sb import lora_xs_factors
    from sklearn.decomposition import TruncatedSVD

    W = torch.randn(24, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    W = W * torch.linspace(3.0, 0.1, 16, dtype=torch.float64)  # a spread spectrum, distinct singular values
    svd = TruncatedSVD(n_components=RANK, n_iter=10, random_state=42).fit(W.T.numpy())
    enc, dec = torch.from_numpy(svd.transform(W.T.numpy())), torch.from_numpy(svd.components_)
    A, B, R = lora_xs_factors(W.float(), RANK, torch.Generator().manual_seed(0))
    signs = torch.sign(torch.diag(B.double().T @ dec.T))  # singular vectors are defined up to sign
    torch.testing.assert_close(B.double(), dec.T * signs, atol=1e-5, rtol=0)
    torch.testing.assert_close(A.double(), enc.T * signs[:, None], atol=1e-4, rtol=1e-5)
    ours, _ = run_init("lora-xs")
    latent = torch.cat([middle_of(layer).matrix().detach().flatten() for _, layer in lora_layers(ours)])
    assert latent.abs().max() < 1e-4 and 0.7e-5 < float(latent.std()) < 1.3e-5


# ---------------------------------------------------------------- item 1: CorDA-KPM on NQ-open


@pytest.fixture
def nq_open_dir():
    if not NQ_OPEN.is_file():
        pytest.skip(f"NQ-open not found at {NQ_OPEN} (see ../shared/data/README.md)")
    use_data_dir(SHARED_DATA)
    yield SHARED_DATA
    use_data_dir(None)


def _windows_seen(method: str):
    """The model, spend and every input_ids a forward pass saw during the method's init."""
    seen: list[list[int]] = []
    original = torch.nn.Embedding.forward

    def record(module, ids):
        seen.append(ids[0].tolist())
        return original(module, ids)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.Embedding, "forward", record)
        model, spend = run_init(method)
    return model, spend, seen


def test_corda_kpm_calibrates_on_nq_open_windows_as_the_reference(nq_open_dir):
    """CorDA cordalib/datautils.py lines 149-151: tot_text = "\\n\\n".join(nq_open questions); lines 237-241:
    each sample is tokenizer(tot_text[i:]) (BOS first) cut to seqlen tokens; build_corda.py lines 121-123:
    256 samples.  Here: min(256, allowance) windows of min(2048, max_length) tokens."""
    _, tokenizer = base_model()
    questions = [json.loads(line)["question"] for line in NQ_OPEN.read_text().splitlines() if line.strip()]
    stream = torch.tensor(tokenizer("\n\n".join(questions), add_special_tokens=False)["input_ids"])
    _, spend, windows = _windows_seen("corda-kpm")
    length = min(2048, DEFAULT_BUDGET.max_length)
    assert len(windows) == min(256, CALIB.examples)
    for window in windows:
        assert len(window) == length and window[0] == tokenizer.bos_token_id
        body = torch.tensor(window[1:])
        starts = (stream[: len(stream) - len(body) + 1] == body[0]).nonzero().flatten()
        assert any(torch.equal(stream[s : s + len(body)], body) for s in starts.tolist())
    assert spend.calibration_examples == 8 and spend.calibration_tokens == 8 * length
    assert spend.method_info["corda_kpm_source"] == "local:nq_open/NQ-open.dev.jsonl"
    assert spend.method_info["corda_kpm_bos"] == tokenizer.bos_token
    assert spend.method_info["calibration_reference_examples"] == 256


def test_corda_kpm_equals_peft_preprocess_corda_on_its_windows(nq_open_dir):
    """peft tuners/lora/corda.py (preprocess_corda, calib_cov_distribution: one sample per pass) and
    LoraLayer.corda_init, fed the same windows: the same A, B and residual base weights."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.config import CordaConfig
    from peft.tuners.lora.corda import preprocess_corda

    ours, _, windows = _windows_seen("corda-kpm")
    model, _ = base_model()
    config = LoraConfig(
        r=RANK,
        lora_alpha=RANK,
        target_modules=list(TARGETS),
        task_type="CAUSAL_LM",
        init_lora_weights="corda",
        corda_config=CordaConfig(corda_method="kpm"),
    )

    def run_model():
        with torch.no_grad():
            for ids in windows:
                model(input_ids=torch.tensor([ids]))

    preprocess_corda(model, config, run_model=run_model)
    theirs = lora_tensors(get_peft_model(model, config))
    mine = lora_tensors(ours)
    assert mine.keys() == theirs.keys()
    for key in mine:
        torch.testing.assert_close(mine[key], theirs[key], atol=1e-5, rtol=1e-5)


def test_corda_kpm_names_its_missing_or_malformed_data(tmp_path):
    use_data_dir(tmp_path)
    try:
        with pytest.raises(MethodFailure, match=r"no NQ-open questions at .*nq_open/NQ-open.dev.jsonl"):
            run_init("corda-kpm")
        (tmp_path / "nq_open").mkdir()
        (tmp_path / "nq_open" / "NQ-open.dev.jsonl").write_text('{"question": "who?"}\n{"query": "what?"}\n')
        with pytest.raises(MethodFailure, match=r"NQ-open.dev.jsonl line 2: expected a JSON object with a 'question'"):
            run_init("corda-kpm")
    finally:
        use_data_dir(None)


# ---------------------------------------------------------------- item 6: EVA


def _peft_eva_state(batches, rho: float, tau: float) -> dict[str, torch.Tensor]:
    from peft import EvaConfig, LoraConfig
    from peft.tuners.lora.eva import get_eva_state_dict

    model, _ = base_model()
    config = LoraConfig(
        r=RANK, target_modules=list(TARGETS), init_lora_weights="eva", eva_config=EvaConfig(rho=rho, tau=tau)
    )
    return get_eva_state_dict(model, dataloader=batches, peft_config=config, show_progress_bar=False)


# (2.0, 0.0): stops after 7 of 10 batches; (2.75, 0.3): 11 components, so the batches with 10
# label tokens are dropped, and the 40 training examples are cycled through twice
@pytest.mark.parametrize("rho,tau,allowance,batches", [(2.0, 0.0, 40, 7), (2.75, 0.3, 80, 20)])
def test_eva_equals_peft_get_eva_state_dict_when_it_converges_within_the_allowance(rho, tau, allowance, batches):
    """peft tuners/lora/eva.py _get_eva_state_dict (lines 405-456: cycle the loader, drop a layer's
    batch with fewer tokens than components (SVDHook, lines 154-156), stop a layer at cosine similarity
    >= tau, redistribute ranks) run by peft itself on the same batches: the same A for every layer."""
    from initbench_baselines.eva import EVA

    calib = CalibrationSpec(examples=allowance, batch_size=4)
    method = EVA(rho=rho, tau=tau)
    method.name = "eva"
    ours, spend = run_init(method, calib=calib)
    assert spend.method_info["eva_converged"] is True and spend.method_info["eva_batches"] == batches
    assert spend.calibration_examples == 4 * batches  # no pass after convergence is charged
    model, tokenizer = base_model()
    calibrator = Calibrator(model, examples(), calib, Spend(), 1, 0, tokenizer.pad_token_id, torch.device("cpu"))
    theirs = _peft_eva_state(list(calibrator.batches()), rho, tau)
    for name, layer in lora_layers(ours):
        key = name.removeprefix("base_model.model.")
        A = layer.lora_A["default"].weight.detach()
        assert A.shape == theirs[key].shape, key
        torch.testing.assert_close(A, theirs[key].to(A.dtype), atol=1e-6, rtol=1e-5)


def test_eva_records_that_it_did_not_converge_within_the_allowance():
    _, spend = run_init("eva")  # tau 0.99, 8 examples: two batches
    assert spend.calibration_examples == 8
    info = spend.method_info
    assert info["eva_converged"] is False and info["eva_batches"] == 2
    assert 0 <= info["eva_layers_converged"] < info["eva_layers"]
