"""The local executor's parallel workers: runs in parallel processes, each pinned to its threads,
and defaults that never oversubscribe the cores."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from conftest import quick_smoke_suite

from initbench.method.registry import get_method
from initbench.run import execution
from initbench.spec.suite import load_suite
from initbench.sweeps.executors import LocalExecutor
from initbench.sweeps.sweep import run_sweep


def test_default_threads_divide_the_cores_and_oversubscription_is_refused(monkeypatch):
    monkeypatch.setattr(execution, "available_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [execution.worker_threads(w, None) for w in (1, 2, 3, 4)] == [4, 2, 1, 1]
    assert execution.worker_threads(2, 2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a caller that pinned itself is not exceeded by default
    assert execution.worker_threads(1, None) == 1
    for workers, threads in ((5, None), (2, 3), (0, None)):
        with pytest.raises(execution.ExecutionError):
            execution.worker_threads(workers, threads)


def test_parallel_workers_run_every_run_in_its_own_pinned_process(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # what an unpinned worker would inherit
    suite = load_suite(str(quick_smoke_suite(tmp_path)))
    out, lines = tmp_path / "runs", []
    workers = min(2, execution.available_cores())
    outcomes = run_sweep(
        suite, [get_method("lora")], [0, 1], out, LocalExecutor(workers=workers, threads_per_run=1), report=lines.append
    )
    assert sorted(o.seed for o in outcomes) == [0, 1] and {o.status for o in outcomes} == {"ok"}
    assert {pq.read_table(o.path).column("torch_threads")[0].as_py() for o in outcomes} == {1}
    assert any("(own process, 1 thread(s))" in line for line in lines)


def test_bf16_on_a_cpu_without_bf16_kernels_is_named(monkeypatch):
    import torch

    from initbench.core import provenance

    cpu = torch.device("cpu")
    monkeypatch.setenv("INITBENCH_PRECISION", "bf16-autocast")
    monkeypatch.setattr(provenance, "cpu_identity", lambda: {"cpu_flags": "avx2,fma"})
    assert "bf16 autocast runs emulated" in execution.bf16_warning(cpu)
    monkeypatch.setattr(provenance, "cpu_identity", lambda: {"cpu_flags": "avx2,avx512f,avx512_bf16"})
    assert execution.bf16_warning(cpu) is None
    monkeypatch.setenv("INITBENCH_PRECISION", "float32")
    monkeypatch.setattr(provenance, "cpu_identity", lambda: {"cpu_flags": "avx2"})
    assert execution.bf16_warning(cpu) is None


def test_parallel_workers_let_one_init_serve_the_rates_of_a_group():
    from initbench.sweeps.executors import InitAwareOrder
    from initbench.sweeps.sweep import RunSpec

    def spec(method, lr, seed=0):
        return RunSpec("s.yaml", method, "addition", seed, "out", lr=lr, split="validation")

    lora = [spec("lora-one", lr) for lr in (0.01, 0.1, 1.0)]
    order = InitAwareOrder([*lora, spec("pissa", 0.01), spec("lora-one", 0.01, seed=1)])
    first, second = order.take(), order.take()  # two workers start: lora-one's other rates wait for its init
    assert (first, second) == (lora[0], spec("pissa", 0.01))
    assert order.take() == spec("lora-one", 0.01, seed=1)  # a third worker: still not lora-one seed 0
    order.finished(first)
    assert [order.take(), order.take()] == lora[1:]  # the init is stored: the other rates go, in parallel
    alone = InitAwareOrder(lora)
    assert [alone.take(), alone.take()] == lora[:2]  # nothing else pending: no worker idles


def test_parallel_workers_let_one_training_serve_a_trial_and_the_run_at_its_rate(smoke_suite):
    from initbench.sweeps.executors import InitAwareOrder
    from initbench.sweeps.sweep import RunSpec

    def spec(task, seed, lr=None):  # lr None: the suite's rate, a run on test
        split = "test" if lr is None else "validation"
        return RunSpec(str(smoke_suite.path), "lora", task, seed, "out", lr=lr, split=split)

    rate = smoke_suite.budget.optimizer.lr
    first, trial, at_rate = spec("addition", 0, 0.001), spec("addition", 0, rate), spec("addition", 0)
    order = InitAwareOrder([first, trial, at_rate, spec("compare_sums", 0), spec("compare_sums", 1)])
    assert [order.take(), order.take()] == [first, spec("compare_sums", 0)]
    order.finished(first)  # the group's init is stored
    assert [order.take(), order.take()] == [trial, spec("compare_sums", 1)]  # at_rate waits for the trial's training
    order.finished(trial)
    assert order.take() == at_rate
    alone = InitAwareOrder([first, trial, at_rate])
    alone.finished(alone.take())
    assert [alone.take(), alone.take()] == [trial, at_rate]  # nothing else pending: no worker idles
