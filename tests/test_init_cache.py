"""Init reuse across learning-rate trials: a restored init trains and scores bit for bit like a
computed one; methods that read ``ctx.lr`` or change what trains store nothing."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from initbench.method.registry import get_method
from initbench.run.harness import run_one
from initbench.run.init_cache import cache_folder

COMPARED_OUT = (
    "init_seconds",
    "train_seconds",
    "eval_seconds",
    "wall_seconds",
    "start_time",
    "peak_memory_bytes",
    "train_tokens_per_second",
    "init_reused",
    "run_id",
)


def _rows(outcome) -> tuple[list[dict], list[float]]:
    rows = pq.read_table(outcome.path).to_pylist()
    curve = pq.read_table(str(outcome.path).replace(".results.", ".curve.")).column("loss").to_pylist()
    return [{k: v for k, v in r.items() if k not in COMPARED_OUT} for r in rows], curve


@pytest.mark.parametrize("name", ["pissa", "lora-ga"])  # base weights changed at attach; gradient calibration
def test_a_reused_init_is_bit_identical_to_computing_it(name, smoke_suite, tmp_path, monkeypatch):
    task, method = smoke_suite.tasks[0], get_method(name)
    monkeypatch.setenv("INITBENCH_INIT_REUSE", "0")
    plain = run_one(smoke_suite, method, task, 0, tmp_path / "plain", lr=0.1, split="validation")
    assert not (cache_folder(tmp_path / "plain")).exists()

    monkeypatch.setenv("INITBENCH_INIT_REUSE", "1")
    out = tmp_path / "reuse"
    first = run_one(smoke_suite, method, task, 0, out, lr=0.01, split="validation")
    assert len(list(cache_folder(out).glob("*.pt"))) == 1
    second = run_one(smoke_suite, method, task, 0, out, lr=0.1, split="validation")
    final = run_one(smoke_suite, method, task, 0, out, lr=0.1)  # a final on test restores it too
    reused = [pq.read_table(o.path).column("init_reused").to_pylist()[0] for o in (first, second, final)]
    assert reused == [False, True, True]
    assert _rows(second) == _rows(plain)
    seconds = [pq.read_table(o.path).column("init_seconds").to_pylist()[0] for o in (first, second)]
    assert seconds[0] == seconds[1]  # the method's own init cost, not the restore's
    other_seed = run_one(smoke_suite, method, task, 1, out, lr=0.1, split="validation")
    assert not pq.read_table(other_seed.path).column("init_reused").to_pylist()[0]


@pytest.mark.parametrize("name", ["lora-sb", "lora-xs"])  # reads ctx.lr; freezes A and B around a middle
def test_methods_that_depend_on_the_rate_or_change_what_trains_store_nothing(name, smoke_suite, tmp_path):
    task = smoke_suite.tasks[0]
    for lr in (0.01, 0.1):
        outcome = run_one(smoke_suite, get_method(name), task, 0, tmp_path, lr=lr, split="validation")
        assert outcome.status == "ok", outcome.error
        assert not pq.read_table(outcome.path).column("init_reused").to_pylist()[0]
    assert not list(cache_folder(tmp_path).glob("*.pt"))


def test_a_tuned_sweep_reuses_the_trials_init_and_cleans_up(tmp_path):
    from conftest import quick_smoke_suite

    from initbench.selection.counted import read_results
    from initbench.spec.suite import load_suite
    from initbench.sweeps.executors import InlineExecutor
    from initbench.sweeps.sweep import run_sweep

    suite = load_suite(str(quick_smoke_suite(tmp_path)))
    out = tmp_path / "runs"
    run_sweep(suite, [get_method("lora-ga")], [0, 1], out, InlineExecutor(), protocol="tuned", report=lambda line: None)
    rows = {
        (r["seed"], r["learning_rate"], r["eval_split"], r["protocol"]): r["init_reused"]
        for r in read_results(out).to_pylist()
    }
    trials = [rows[(0, lr, "validation", "tuned")] for lr in suite.tuning.lr_grid]
    assert trials == [False] + [True] * (len(trials) - 1)
    assert all(reused for (seed, _, split, _), reused in rows.items() if seed == 0 and split == "test")  # a tuning seed
    # seed 1 is no tuning seed: its default-rate final computes the init, its tuned final restores it
    assert not rows[(1, suite.budget.optimizer.lr, "test", "fixed")]
    assert [reused for (seed, _, _, protocol), reused in rows.items() if seed == 1 and protocol == "tuned"] == [True]
    assert not cache_folder(out).exists()


def test_an_unreadable_entry_is_recomputed(smoke_suite, tmp_path):
    task, method = smoke_suite.tasks[0], get_method("lora-ga")
    first = run_one(smoke_suite, method, task, 0, tmp_path, lr=0.01, split="validation")
    (entry,) = cache_folder(tmp_path).glob("*.pt")
    entry.write_bytes(b"not a torch file")
    second = run_one(smoke_suite, method, task, 0, tmp_path, lr=0.1, split="validation")
    assert second.status == "ok" and first.status == "ok"
    assert not pq.read_table(second.path).column("init_reused").to_pylist()[0]
