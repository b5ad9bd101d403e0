"""Calibration statistics are what they claim, on the base model, and are budgeted."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from initbench.inputs.data import collate, materialize, tokenize_records
from initbench.inputs.models import tiny_model
from initbench.method.calibration import Calibrator
from initbench.spec.budget import BudgetExceeded, CalibrationSpec, Spend


@pytest.fixture
def setup(smoke_suite):
    base, tok = tiny_model(smoke_suite.model.tiny, torch.float32)
    examples = tokenize_records(materialize(smoke_suite.tasks[0]).records("train"), tok, 48)
    # B != 0 so that a statistic computed with the adapter *enabled* would differ
    model = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=2, target_modules=["q_proj", "down_proj"], init_lora_weights="gaussian")
    )
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param)
    spend = Spend()
    calibrator = Calibrator(
        model,
        examples,
        CalibrationSpec(examples=6, batch_size=4),
        spend,
        1000,
        0,
        tok.pad_token_id,
        torch.device("cpu"),
        tokenizer=tok,
    )
    return base, calibrator, spend


def test_weight_gradients_equal_autograd_on_the_base_model(setup):
    base, calibrator, spend = setup
    grads = calibrator.weight_gradients()
    assert spend.calibration_examples == 6 and spend.calibration_backward_passes == 2
    expected = {}
    for chunk in (calibrator.examples[:4], calibrator.examples[4:6]):
        base.zero_grad()
        for p in base.parameters():
            p.requires_grad_(True)
        base(**collate(chunk, 0)).loss.backward()
        for name, module in base.named_modules():
            if name.endswith(("q_proj", "down_proj")):
                expected[name] = expected.get(name, 0) + module.weight.grad / 2
    assert len(grads) == 4
    for name, grad in grads.items():
        key = name.removeprefix("base_model.model.")
        torch.testing.assert_close(grad, expected[key], rtol=1e-5, atol=1e-7)
    assert not any(p.requires_grad for n, p in calibrator.model.named_parameters() if "base_layer" in n)


def test_activation_covariance_and_the_allowance(setup):
    base, calibrator, spend = setup
    covariance = calibrator.activation_covariance(examples=4)
    name = next(n for n in covariance if n.endswith("q_proj"))
    batch = collate(calibrator.examples[:4], 0)
    captured = []
    module = base.get_submodule(name.removeprefix("base_model.model."))
    handle = module.register_forward_hook(lambda m, args, out: captured.append(args[0]))
    base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    handle.remove()
    x = captured[0][batch["attention_mask"].bool()]
    torch.testing.assert_close(covariance[name], x.T @ x / x.shape[0], rtol=1e-5, atol=1e-6)
    assert spend.calibration_examples == 4 and spend.calibration_backward_passes == 0
    with pytest.raises(BudgetExceeded, match="only 2 of the suite's 6 remain"):
        calibrator.activation_covariance()


def test_encode_charges_data_of_the_methods_own(setup):
    """``encode`` (issue 15): texts through the run's tokenizer, token ids as given, cut to max_length,
    batched and charged as the task's batches are; more prompts than remain are refused up front."""
    base, calibrator, spend = setup
    tok = calibrator.tokenizer
    calibrator.max_length = 5
    prompts = ["7+8=15", [3, 4, 5], list(range(1, 10))]
    batches = list(calibrator.encode(prompts, batch_size=2))
    assert [len(b["input_ids"]) for b in batches] == [2, 1]
    text = tok("7+8=15")["input_ids"][:5]
    rows = [row[mask.bool()].tolist() for b in batches for row, mask in zip(b["input_ids"], b["attention_mask"])]
    assert rows == [text, [3, 4, 5], [1, 2, 3, 4, 5]]
    for b in batches:  # a language-modeling target on every real token
        assert torch.equal(b["labels"][b["attention_mask"].bool()], b["input_ids"][b["attention_mask"].bool()])
    assert spend.calibration_examples == 3 and spend.calibration_forward_passes == 2
    assert spend.calibration_tokens == len(text) + 3 + 5
    with pytest.raises(BudgetExceeded, match="asked for 4 examples but only 3"):
        next(calibrator.encode([[1]] * 4))
    assert spend.calibration_examples == 3


def test_encode_needs_a_tokenizer_for_text(setup):
    _, calibrator, spend = setup
    calibrator.tokenizer = None
    with pytest.raises(ValueError, match="no tokenizer"):
        next(calibrator.encode(["a text"]))
    assert spend.calibration_examples == 0


def test_layer_inputs_at_label_tokens_only(setup):
    """``labels_only`` keeps the inputs at the tokens that carry a label (EVA's label mask)."""
    _, calibrator, spend = setup
    every = next(calibrator.layer_inputs(examples=4))
    labelled = next(calibrator.layer_inputs(examples=2, labels_only=True))
    batch = collate(calibrator.examples[:4], 0)
    wanted = (batch["labels"][:2] != -100) & batch["attention_mask"][:2].bool()
    name = next(iter(every))
    assert every[name].shape[0] == int(batch["attention_mask"].sum())
    assert labelled[name].shape[0] == int(wanted.sum()) < int(batch["attention_mask"][:2].sum())
    assert list(every) == list(labelled)
