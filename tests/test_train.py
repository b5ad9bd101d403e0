"""The training loop's fast path (INITBENCH_FAST=1) computes the plain path's loss."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from initbench.inputs.data import batches, materialize, tokenize_records
from initbench.inputs.models import tiny_model
from initbench.method.registry import get_method
from initbench.run.harness import run_one
from initbench.run.train import labelled_positions_loss

#: the fast path sums the same float32 terms in another order: agreement to float32 rounding
LOSS_RTOL = 1e-5
CURVE_RTOL = 1e-5  # over 6 optimizer steps (measured: 1.1e-7 relative at most)


def test_labelled_positions_loss_equals_the_models_loss(smoke_suite):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny_model(smoke_suite.model.tiny, torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights="gaussian"))
    examples = tokenize_records(materialize(smoke_suite.tasks[0]).records("train"), tokenizer, 48)
    batch = next(iter(batches(examples, 8, 1, 0, tokenizer.pad_token_id)))
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()  # prompt and padding are masked
    model.train()
    fast, plain = labelled_positions_loss(model, batch), model(**batch).loss
    assert fast.item() == pytest.approx(plain.item(), rel=LOSS_RTOL)
    fast.backward()
    grads_fast = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    plain.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(grads_fast[name], p.grad, rtol=1e-4, atol=1e-6)


def _curve(outcome) -> list[float]:
    return pq.read_table(str(outcome.path).replace(".results.", ".curve.")).column("loss").to_pylist()


def _plain_and_with(env: str, value: str, smoke_suite, tmp_path, monkeypatch):
    """lora on smoke's first task, seed 0, as it is and with ``env=value``: (rows, loss curves)."""
    task, lora = smoke_suite.tasks[0], get_method("lora")
    plain = run_one(smoke_suite, lora, task, 0, tmp_path / "plain")
    monkeypatch.setenv(env, value)
    other = run_one(smoke_suite, lora, task, 0, tmp_path / "other")
    rows = [pq.read_table(o.path).to_pylist()[0] for o in (plain, other)]
    return rows, [_curve(plain), _curve(other)]


def test_fast_smoke_run_agrees_with_the_plain_run_and_says_so(smoke_suite, tmp_path, monkeypatch):
    rows, curves = _plain_and_with("INITBENCH_FAST", "1", smoke_suite, tmp_path, monkeypatch)
    assert [json.loads(r["execution"])["loss"] for r in rows] == ["full-logits", "labelled-positions"]
    assert [json.loads(r["execution"])["fused_adamw"] for r in rows] == [False, False]  # read off the CPU optimizer
    assert curves[1] == pytest.approx(curves[0], rel=CURVE_RTOL)


def test_bf16_autocast_on_cpu_is_selected_recorded_and_close(smoke_suite, tmp_path, monkeypatch):
    """Issue 13: ``INITBENCH_PRECISION=bf16-autocast`` trains under bf16 autocast on the CPU and says so."""
    rows, (plain, bf16) = _plain_and_with("INITBENCH_PRECISION", "bf16-autocast", smoke_suite, tmp_path, monkeypatch)
    assert [json.loads(r["execution"])["autocast"] for r in rows] == [None, "bf16"]
    assert bf16 != plain  # it did compute in bf16 ...
    assert bf16 == pytest.approx(plain, rel=2e-2)  # ... the same quantity (bf16: 8 mantissa bits)
    monkeypatch.setenv("INITBENCH_PRECISION", "fp8")
    from initbench.run.execution import ExecutionError, precision

    with pytest.raises(ExecutionError, match="INITBENCH_PRECISION must be one of float32, bf16-autocast"):
        precision(torch.device("cpu"))


def test_compile_setting_trains_through_torch_compile_and_says_so(smoke_suite, tmp_path, monkeypatch):
    """``INITBENCH_COMPILE=1`` hands the loss to torch.compile and records it (the real compile takes
    minutes on a CPU; ``benchmarks/cpu_fast_path.py`` measures it, here a recording stand-in)."""
    compiled = []

    def fake_compile(fn, **kwargs):
        compiled.append(fn.__name__)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    task, lora = smoke_suite.tasks[0], get_method("lora")
    eager = run_one(smoke_suite, lora, task, 0, tmp_path / "eager")
    assert compiled == []
    monkeypatch.setenv("INITBENCH_COMPILE", "1")
    run = run_one(smoke_suite, lora, task, 0, tmp_path / "compiled")
    assert compiled == ["_model_loss"]
    assert [json.loads(pq.read_table(o.path).column("execution")[0].as_py())["compile"] for o in (eager, run)] == [
        False,
        True,
    ]
    assert _curve(run) == _curve(eager)


def test_cli_precision_flag_reaches_the_rows_and_a_bad_setting_exits_2(tmp_path, monkeypatch, capsys):
    from conftest import quick_smoke_suite

    from initbench.cli import main

    monkeypatch.setenv("INITBENCH_PRECISION", "float32")  # restored after the test; main() overrides it
    out = tmp_path / "runs"
    assert (
        main(
            [
                "evaluate",
                "--suite",
                str(quick_smoke_suite(tmp_path)),
                "--method",
                "lora",
                "--out",
                str(out),
                "--precision",
                "bf16-autocast",
            ]
        )
        == 0
    )
    row = pq.read_table(next(out.rglob("*.results.parquet"))).to_pylist()[0]
    assert json.loads(row["execution"])["autocast"] == "bf16"
    monkeypatch.setenv("INITBENCH_PRECISION", "half")
    assert main(["evaluate", "--suite", "smoke", "--method", "lora", "--out", str(tmp_path / "bad")]) == 2
    assert "INITBENCH_PRECISION must be one of" in capsys.readouterr().err
