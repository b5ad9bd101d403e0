"""Forgetting (mean per-token KL from the base model) against torch.distributions, on the tiny model."""

from __future__ import annotations

import copy

import torch
from peft import LoraConfig, get_peft_model

from initbench.inputs.models import tiny_model
from initbench.run.forgetting import held_set, mean_token_kl

SHAPE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
TEXTS = [
    "who wrote the book of mormon",
    "when did the eagles win last super bowl",
    "where is the eiffel tower",
    "how many moons does mars have",
    "a",
]


def _kl_by_distributions(base: torch.nn.Module, other: torch.nn.Module, tokenizer) -> float:
    """Text by text, no padding at all: torch's Categorical KL at every position, averaged over positions."""
    kls = []
    for text in TEXTS:
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        if ids.shape[1] < 2:
            continue
        with torch.no_grad():
            p = torch.distributions.Categorical(logits=base(input_ids=ids).logits.float()[0])
            q = torch.distributions.Categorical(logits=other(input_ids=ids).logits.float()[0])
        kls.append(torch.distributions.kl_divergence(p, q))
    return float(torch.cat(kls).double().mean())


def test_kl_matches_torch_distributions_and_ignores_padding():
    base, tokenizer = tiny_model(SHAPE, torch.float32)
    other = copy.deepcopy(base)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    held = held_set("t", TEXTS, base, tokenizer, batch_size=2)  # padded batches of unequal lengths
    expected = _kl_by_distributions(base.eval(), other.eval(), tokenizer)
    assert expected > 1e-4
    assert abs(mean_token_kl(other, held) - expected) <= 1e-5 * expected
    assert mean_token_kl(base, held) == 0.0


def test_base_side_is_the_untouched_model_not_the_adapter_switched_off():
    """After a residual init (PiSSA) the base weights are W - sBA: switching the adapter off is not the
    base model.  The held set is taken before attach, so a function-preserving init reads ~0 and the
    same model with its adapter disabled does not."""
    base, tokenizer = tiny_model(SHAPE, torch.float32)
    held = held_set("t", TEXTS, base, tokenizer)
    model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights="pissa")
    )
    assert mean_token_kl(model, held) < 1e-6
    with model.disable_adapter():
        assert mean_token_kl(model, held) > 1e-4


def test_final_runs_record_forgetting_on_nq_open_and_scores_do_not_move(tmp_path, monkeypatch):
    """Through the harness: a training method's final run records its forgetting on the NQ-open held
    set (base: null), and measuring it leaves the run's scores and loss curve unchanged."""
    import pyarrow.parquet as pq
    import pytest
    from conftest import SHARED_DATA, quick_smoke_suite

    from initbench.method.registry import get_method
    from initbench.run import forgetting as module
    from initbench.run.harness import run_one
    from initbench.spec.suite import load_suite

    if not (SHARED_DATA / "nq_open" / "NQ-open.dev.jsonl").is_file():
        pytest.skip("NQ-open not found under ../shared/data")
    suite = load_suite(str(quick_smoke_suite(tmp_path)))
    task = suite.tasks[0]

    def run(folder: str, data_dir: str | None):
        module._HELD.clear(), module._UNAVAILABLE.clear()
        if data_dir:
            monkeypatch.setenv("INITBENCH_DATA_DIR", data_dir)
        else:
            monkeypatch.delenv("INITBENCH_DATA_DIR", raising=False)
            monkeypatch.setattr(module, "general_text", offline)
        paths = {m: run_one(suite, get_method(m), task, 0, tmp_path / folder).path for m in ("lora", "base")}
        rows = {m: pq.read_table(p).to_pylist() for m, p in paths.items()}
        curve = pq.read_table(str(paths["lora"]).replace(".results.", ".curve.")).column("loss").to_pylist()
        return rows, curve

    def offline():
        from initbench.inputs.datasets_io import DataUnavailable

        raise DataUnavailable("offline, no data directory")

    with_kl, curve = run("with", str(SHARED_DATA))
    lora = with_kl["lora"][0]
    assert lora["forgetting_kl"] > 0 and "nq_open" in lora["forgetting_set"] and "first 64" in lora["forgetting_set"]
    assert with_kl["base"][0]["forgetting_kl"] is None
    without, curve_without = run("without", None)
    assert without["lora"][0]["forgetting_kl"] is None
    assert [r["value"] for r in without["lora"]] == [r["value"] for r in with_kl["lora"]] and curve == curve_without


def test_leaderboard_shows_forgetting_with_intervals(tmp_path):
    from _trees import smoke_row, write_smoke_run

    from initbench.board import leaderboard
    from initbench.board.leaderboard_text import render_board
    from initbench.selection.counted import read_results

    for seed, (kl_lora, kl_pissa) in enumerate([(0.010, 0.002), (0.014, 0.004)]):
        for method, kl in (("lora", kl_lora), ("pissa", kl_pissa)):
            write_smoke_run(
                tmp_path, smoke_row(method, "addition", seed, 0.5, forgetting_kl=kl, forgetting_set="held-test")
            )
    board = leaderboard.build(read_results(tmp_path))
    rows = {r.method: r for r in board.suites[0].forgetting}
    assert rows["lora"].seeds == 2 and abs(rows["lora"].mean - 0.012) < 1e-12
    assert rows["lora"].ci_low == 0.010 and rows["lora"].ci_high == 0.014
    assert "KL from base" in render_board(board) and "held-test" in render_board(board)


def test_publish_plots_score_against_forgetting(tmp_path):
    import pytest
    from _trees import smoke_row, write_smoke_run

    pytest.importorskip("matplotlib")
    from initbench.board import leaderboard
    from initbench.board.plots import write_plots
    from initbench.selection.counted import read_results

    for seed in (0, 1):
        for method, kl, value in (("base", None, 0.1), ("lora", 0.012, 0.6), ("pissa", 0.003, 0.5)):
            write_smoke_run(
                tmp_path / "runs",
                smoke_row(method, "addition", seed, value + 0.01 * seed, forgetting_kl=kl, forgetting_set="held-test"),
            )
    board = leaderboard.build(read_results(tmp_path / "runs"))
    written = write_plots(board, None, tmp_path / "plots")
    assert tmp_path / "plots" / "smoke-pareto-forgetting.png" in written


def test_reproduce_holds_forgetting_to_the_last_digit(tmp_path, monkeypatch):
    """Forgetting is a published number: `reproduce` reruns it and compares held set and KL exactly,
    and a run whose held set was a local copy is refused before any compute without a data directory."""
    import pytest
    from conftest import SHARED_DATA

    from initbench.board.publish import PublishError, publish
    from initbench.board.reproduce import reproduce
    from initbench.cli import main
    from initbench.run import forgetting as module

    if not (SHARED_DATA / "nq_open" / "NQ-open.dev.jsonl").is_file():
        pytest.skip("NQ-open not found under ../shared/data")
    from initbench.inputs import datasets_io

    monkeypatch.setattr(datasets_io, "_DATA_DIR_OPTION", None)  # evaluate sets it from the env: restored after
    monkeypatch.setenv("INITBENCH_DATA_DIR", str(SHARED_DATA))
    module._HELD.clear(), module._UNAVAILABLE.clear()
    out = tmp_path / "runs"
    assert main(["evaluate", "--suite", "smoke", "--method", "lora", "--seeds", "0", "--out", str(out)]) == 0
    target = publish(out, "v1", root=tmp_path / "board", incomplete=True)

    report, ok = reproduce(target, runs=1)
    assert ok, report

    true_kl = module.mean_token_kl
    monkeypatch.setattr(module, "mean_token_kl", lambda model, held: true_kl(model, held) + 1e-12)
    report, ok = reproduce(target, runs=1)
    assert not ok and "| forgetting_kl " in report and "differs" in report
    monkeypatch.setattr(module, "mean_token_kl", true_kl)

    monkeypatch.delenv("INITBENCH_DATA_DIR")
    datasets_io.use_data_dir(None)
    with pytest.raises(PublishError, match=r"forgetting on a local copy .*set INITBENCH_DATA_DIR"):
        reproduce(target, runs=1)
