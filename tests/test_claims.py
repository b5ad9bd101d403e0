"""Killing a sweep leaves no orphan worker, and two sweeps on one folder never compute a run twice
(issue 18, finding 10)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import REPO, cli_env, quick_smoke_suite
from sweep_methods import LOG, SLEEP

from initbench.store import claims

SLOW = "tests.sweep_methods:SlowLogged"


def _write_claim(stem, pid: int, host: str | None = None, proc_start: str | None = None):
    path = claims.claim_path(stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "pid": pid,
                "host": host or socket.gethostname(),
                "started": "then",
                "proc_start": claims._proc_stat(pid)[1] if proc_start is None else proc_start,
                "nonce": "n",
            }
        )
    )
    return path


def test_a_claim_is_exclusive_and_released(tmp_path):
    stem = tmp_path / "suite" / "m" / "t" / "seed0-h"
    claim = claims.acquire(stem)
    assert isinstance(claim, claims.Claim) and claims.claim_path(stem).exists()
    assert claims.holder(stem) == claim.holder  # the driver of this process sees it held
    claim.release()
    assert not claims.claim_path(stem).exists() and claims.holder(stem) is None


def test_a_live_claimant_is_respected_and_a_dead_ones_claim_released(tmp_path):
    stem = tmp_path / "seed0-h"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_claim(stem, sleeper.pid)
        held = claims.acquire(stem)
        assert isinstance(held, claims.Holder) and held.pid == sleeper.pid
        assert f"pid {sleeper.pid} on {socket.gethostname()}" in held.describe()
        _write_claim(stem, sleeper.pid, proc_start="1")  # same pid, another process: the pid was reused
        assert isinstance(claims.acquire(stem), claims.Claim)
    finally:
        sleeper.kill()
        sleeper.wait()
    _write_claim(stem, sleeper.pid)  # the claimant is dead: a stale claim
    assert claims.holder(stem) is None
    claim = claims.acquire(stem)
    assert isinstance(claim, claims.Claim) and claim.holder.pid == os.getpid()
    claim.release()


def test_a_claim_from_another_host_is_respected(tmp_path):
    stem = tmp_path / "seed0-h"
    _write_claim(stem, 1, host="elsewhere.example", proc_start="")
    held = claims.acquire(stem)
    assert isinstance(held, claims.Holder) and held.host == "elsewhere.example"


@pytest.fixture
def slow_env(tmp_path, monkeypatch):
    log = tmp_path / "runs.log"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(LOG, str(log))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return log


def _command(suite, out, seeds: str, verb: str = "evaluate") -> list[str]:
    return [
        sys.executable,
        "-m",
        "initbench.cli",
        verb,
        "--suite",
        str(suite),
        "--method",
        SLOW,
        "--seeds",
        seeds,
        "--out",
        str(out),
    ]


def _wait_for_first_run(log, process, timeout: float = 300) -> int:
    """The pid that started the first run logged by ``SlowLogged`` (waiting for it)."""
    deadline = time.monotonic() + timeout
    while not (log.exists() and log.read_text().strip()):
        assert process.poll() is None and time.monotonic() < deadline, "the sweep never started a run"
        time.sleep(0.1)
    return int(log.read_text().split()[1])


def _inline_sweep(suite_path, out, seeds: list[int]):
    from initbench.method.registry import get_method
    from initbench.spec.suite import load_suite
    from initbench.sweeps.executors import InlineExecutor
    from initbench.sweeps.sweep import run_sweep

    lines: list[str] = []
    outcomes = run_sweep(
        load_suite(str(suite_path)), [get_method(SLOW)], seeds, out, InlineExecutor(), report=lines.append
    )
    return outcomes, lines


@pytest.mark.slow
def test_two_concurrent_sweeps_compute_each_run_once(tmp_path, slow_env, monkeypatch):
    import initbench.run.harness  # noqa: F401  (imported before the other sweep starts: this one is then quick to start)

    monkeypatch.setenv(SLEEP, "2")
    suite, out = quick_smoke_suite(tmp_path), tmp_path / "runs"
    other = subprocess.Popen(_command(suite, out, "0,1,2,3,4"), stderr=subprocess.PIPE, text=True, env=cli_env())
    _wait_for_first_run(slow_env, other)  # the other sweep is computing its first run (seed 0)
    outcomes, lines = _inline_sweep(suite, out, [0, 1, 2, 3, 4])  # a second sweep on the same folder
    errors = other.communicate(timeout=600)[1]
    assert other.returncode == 0, errors[-2000:]
    assert any("being computed by another process" in line for line in lines), lines  # seed 0: left to it
    computed = Counter(line.split()[0] for line in slow_env.read_text().splitlines())
    assert computed == Counter({str(s): 1 for s in range(5)}), (computed, lines, errors[-2000:])  # none twice
    assert len(list(out.rglob("*.results.parquet"))) == 5 and not list(out.rglob("*.claim"))


@pytest.mark.slow
def test_killing_the_driver_kills_its_worker_and_a_rerun_takes_the_stale_claim(tmp_path, slow_env, monkeypatch):
    monkeypatch.setenv(SLEEP, "120")
    suite, out = quick_smoke_suite(tmp_path), tmp_path / "runs"
    driver = subprocess.Popen(_command(suite, out, "0", verb="sweep"), stderr=subprocess.DEVNULL, env=cli_env())
    worker = _wait_for_first_run(slow_env, driver)
    assert worker != driver.pid  # the local executor's own process for the run
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    for _ in range(100):  # the worker dies with its driver, not 120 s later
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the worker outlived its driver")
    assert not list(out.rglob("*.results.parquet"))  # nothing recorded, least of all a misleading failure
    (stale,) = out.rglob("*.claim")
    assert json.loads(stale.read_text())["pid"] == worker

    monkeypatch.setenv(SLEEP, "0")
    (outcome,), _ = _inline_sweep(suite, out, [0])  # the rerun releases the dead worker's claim
    assert outcome.status == "ok" and not list(out.rglob("*.claim"))
