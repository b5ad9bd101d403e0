"""Executors: where the runs of a sweep execute.  Each takes a list of ``RunSpec`` and yields
``(spec, crash)`` as runs end, ``crash`` being None when the worker returned and otherwise why its
process died; the sweep then reads the run's results file (``initbench.sweeps.sweep``).

- ``inline``: in this process, one after another; the base model is loaded once (``evaluate``).
- ``local``: one fresh process per run (``python -P -m initbench.sweeps.sweep SPEC``, ``worker_command``), one
  after another, so a crash or an out-of-memory kill is that run's failure and the sweep goes on; a
  worker dies with its driver (``die_with_driver``), so killing the sweep leaves no orphan behind.
- ``ray``: one Ray task per run on an existing cluster (``address``) or a local one, one GPU each
  where the cluster has GPUs; Ray reuses worker processes, so each loads the base model once.
  The driver's ``INITBENCH_*`` settings (diagnostics, fast path, data and cache folders) travel
  with every task.
- ``slurm``: one SLURM job array through submitit (``cluster="local"`` runs the same jobs as
  local processes, for a laptop or CI).
- any other name: an executor a plugin registers in the ``initbench.sweeps.executors`` entry-point group
  (``make_executor``), as methods register in ``initbench.methods``.

Every worker imports the *installed* initbench, whatever folder the sweep was started from: a
checkout named ``initbench`` in the working folder (which ``python -m``, Ray and submitit all put
first on a worker's import path) must not shadow it.  Local workers start with ``-P`` (``worker_command``);
Ray tasks and submitit jobs take the folder off the path before importing initbench (``remote_worker``).
"""

from __future__ import annotations

import collections
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from initbench.store.results import first_line
from initbench.sweeps.sweep import RunSpec, execute_run

Report = Callable[[str], None]


class Executor(Protocol):
    def run(self, specs: list[RunSpec], report: Report) -> Iterator[tuple[RunSpec, str | None]]:
        """Run every spec; yield each with None, or with the reason its process died."""
        ...


class InlineExecutor:
    """Every run in this process (the base model is loaded once and lent to each run, loaded again after a
    run that changed it: ``harness.base_model``)."""

    def run(self, specs: list[RunSpec], report: Report) -> Iterator[tuple[RunSpec, str | None]]:
        for i, spec in enumerate(specs, start=1):
            report(f"[{i}/{len(specs)}] {spec.label}")
            execute_run(spec)
            yield spec, None


@dataclass
class LocalExecutor:
    """Fresh Python processes, one per run, ``workers`` at a time, each pinned to ``threads_per_run``
    threads (torch, OpenMP, MKL; default: the cores divided evenly among the workers, so the machine
    is never oversubscribed); stderr (progress bars) passes through."""

    workers: int = 1
    threads_per_run: int | None = None

    def run(self, specs: list[RunSpec], report: Report) -> Iterator[tuple[RunSpec, str | None]]:
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        from initbench.run.execution import worker_environment, worker_threads

        threads = worker_threads(self.workers, self.threads_per_run)
        env = {**os.environ, **worker_environment(threads)}
        if self.workers > 1:
            report(f"local: {len(specs)} runs, {self.workers} processes at a time, {threads} thread(s) each")
        scheduler = InitAwareOrder(specs)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            running: dict = {}
            while scheduler.pending or running:
                while scheduler.pending and len(running) < self.workers:
                    spec = scheduler.take()
                    report(
                        f"[{len(specs) - len(scheduler.pending)}/{len(specs)}] {spec.label} "
                        f"(own process, {threads} thread(s))"
                    )
                    command = worker_command(spec.to_json())
                    running[pool.submit(_run_process, command, env)] = spec
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    spec = running.pop(future)
                    scheduler.finished(spec)
                    yield spec, future.result()


#: what a local worker runs on Python 3.10, which has no ``-P``: ``-c`` puts '' (the working folder) first
#: on the import path, and this takes it off before importing initbench
_SAFE_MAIN_310 = "import sys; del sys.path[0]; from initbench.sweeps.worker import main; sys.exit(main())"


def worker_command(*args: str) -> list[str]:
    """The command of a local worker, ``python -m initbench.sweeps.worker ARGS``, without the working folder on
    its import path (``-P``, Python 3.11+; on 3.10 ``_SAFE_MAIN_310``): a folder named ``initbench``
    where the sweep was started must not shadow the installed package.  ``PYTHONPATH`` still applies."""
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", "initbench.sweeps.worker", *args]
    return [sys.executable, "-c", _SAFE_MAIN_310, *args]


def remote_worker(driver_folder: str) -> Callable[[str], dict]:
    """What a Ray task or a submitit job runs: ``execute_run`` of a ``RunSpec`` given as JSON.

    Ray puts the driver's working folder ``driver_folder`` first on every worker's import path, and
    submitit's ``python -m`` the job's working folder (the driver's, unless the cluster changes it);
    before the first ``import initbench`` in a process, ``run`` takes that entry off (once: a
    ``PYTHONPATH`` entry of the same folder stays).  A closure and a string, so Ray and submitit pickle
    both by value and unpickling them imports nothing from the working folder."""
    target = os.path.realpath(driver_folder)

    def run(spec_json: str) -> dict:
        import os
        import sys

        if "initbench" not in sys.modules:
            first = next((i for i, entry in enumerate(sys.path) if os.path.realpath(entry or ".") == target), None)
            if first is not None:
                del sys.path[first]
        from initbench.sweeps.sweep import RunSpec, execute_run

        return execute_run(RunSpec.from_json(spec_json))

    return run


DRIVER_PID = "INITBENCH_DRIVER_PID"


def die_with_driver() -> None:
    """In a local worker: die (SIGKILL) as soon as the driver that started it exits, so a killed sweep
    leaves no orphan that runs on and records a misleading failure (its stderr pipe is gone) -- the run
    is simply not finished, its claim is stale, and the next sweep redoes it.  Linux: the kernel's
    ``PR_SET_PDEATHSIG``; elsewhere a watchdog thread polling the parent pid every second.  Does nothing
    outside a worker the local executor started (no ``INITBENCH_DRIVER_PID``)."""
    expected = os.environ.get(DRIVER_PID)
    if not expected:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    else:

        def watch() -> None:
            while os.getppid() == int(expected):
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != int(expected):  # the driver died before the guard was set
        os.kill(os.getpid(), signal.SIGKILL)


class InitAwareOrder:
    """The order parallel workers take runs in, so that one init serves the rates of a (method, task,
    seed) (``initbench.run.init_cache``) and one training the runs that train the same model
    (``initbench.run.train_cache``): a run waits while another run of its group is computing the group's
    first init, or while a run of its group at its rate is in flight (a tuning trial at the suite's
    rate and the run at that rate), unless no other run is pending (then it goes, rather than leave a
    worker idle)."""

    def __init__(self, specs: list[RunSpec]):
        self.pending = list(specs)
        self._computing: set[tuple] = set()  # groups whose first run is in flight
        self._ready: set[tuple] = set()  # groups with a finished run (the init is stored, if storable)
        self._running: list[RunSpec] = []

    @staticmethod
    def group(spec: RunSpec) -> tuple:
        return spec.method, spec.task, spec.seed

    @classmethod
    def training(cls, spec: RunSpec) -> tuple:
        """The group and the rate (the suite's where ``lr`` is None) of a run."""
        return *cls.group(spec), _suite_rate(spec.suite) if spec.lr is None else spec.lr

    def _waits(self, spec: RunSpec) -> bool:
        return self.group(spec) in self._computing or any(
            self.training(spec) == self.training(other) for other in self._running
        )

    def take(self) -> RunSpec:
        spec = next((s for s in self.pending if not self._waits(s)), self.pending[0])
        self.pending.remove(spec)
        self._running.append(spec)
        if self.group(spec) not in self._ready:
            self._computing.add(self.group(spec))
        return spec

    def finished(self, spec: RunSpec) -> None:
        self._running.remove(spec)
        self._computing.discard(self.group(spec))
        self._ready.add(self.group(spec))


@functools.cache
def _suite_rate(path: str) -> float | None:
    """The learning rate of the suite at ``path`` (a run with ``lr`` None trains at it); None if unreadable."""
    from initbench.spec.suite import load_suite

    try:
        return load_suite(path).budget.optimizer.lr
    except Exception:  # the run itself will say why
        return None


def _run_process(command: list[str], env: dict[str, str] | None = None) -> str | None:
    """Run ``command`` (a worker that dies with this process; ``env``: its environment, default this
    process's), echoing its stderr; None if it exited 0, else why it did not."""
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, env={**(os.environ if env is None else env), DRIVER_PID: str(os.getpid())}
    )
    tail: collections.deque[str] = collections.deque(maxlen=20)

    def pump() -> None:
        for raw in iter(lambda: process.stderr.read1(4096), b""):
            text = raw.decode(errors="replace")
            sys.stderr.write(text)
            tail.extend(line for line in text.replace("\r", "\n").splitlines() if line.strip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    code = process.wait()
    reader.join()
    if code == 0:
        return None
    last = tail[-1].strip() if tail else ""
    if code < 0:
        name = signal.Signals(-code).name
        why = f"worker process killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        why = f"worker process exited with status {code}"
    return why + (f"; last output: {last[:300]}" if last else "")


@dataclass
class RayExecutor:
    """One Ray task per run.  ``address`` None starts a local cluster of ``num_cpus`` CPUs for the
    sweep (and stops it after); otherwise connects to the running one (``auto`` or ``ray://host:port``)."""

    address: str | None = None
    num_cpus: int | None = None
    cpus_per_run: float = 1.0

    def run(self, specs: list[RunSpec], report: Report) -> Iterator[tuple[RunSpec, str | None]]:
        import ray

        started = not ray.is_initialized()
        if started:
            kwargs = {"num_cpus": self.num_cpus or os.cpu_count()} if self.address is None else {}
            ray.init(address=self.address, include_dashboard=False, log_to_driver=True, **kwargs)
        try:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
            settings = {k: v for k, v in os.environ.items() if k.startswith("INITBENCH_")}  # diagnostics, fast path
            remote = ray.remote(remote_worker(os.getcwd())).options(
                num_cpus=self.cpus_per_run, num_gpus=gpus, max_retries=0, runtime_env={"env_vars": settings}
            )
            report(f"ray: {len(specs)} runs submitted ({gpus} GPU, {self.cpus_per_run:g} CPU each)")
            refs = {remote.remote(spec.to_json()): spec for spec in specs}
            pending = list(refs)
            while pending:
                (ref,), pending = ray.wait(pending, num_returns=1)
                try:
                    ray.get(ref)
                    yield refs[ref], None
                except ray.exceptions.RayError as err:
                    yield refs[ref], f"ray: {type(err).__name__}: {first_line(err)}"
        finally:
            if started:
                ray.shutdown()


@dataclass
class SlurmExecutor:
    """One SLURM job array (one job per run) through submitit; ``cluster="local"`` runs the jobs as
    local processes instead.  ``folder`` holds submitit's logs and pickles."""

    folder: Path
    cluster: str = "slurm"
    partition: str | None = None
    gpus_per_run: int = 1
    cpus_per_run: int = 4
    timeout_min: int = 240
    max_parallel: int = 64

    def run(self, specs: list[RunSpec], report: Report) -> Iterator[tuple[RunSpec, str | None]]:
        import submitit

        executor = submitit.AutoExecutor(folder=str(self.folder), cluster=self.cluster)
        params = {
            "name": "initbench",
            "timeout_min": self.timeout_min,
            "cpus_per_task": self.cpus_per_run,
            "slurm_array_parallelism": self.max_parallel,
        }
        if self.cluster != "local":
            params["gpus_per_node"] = self.gpus_per_run
        if self.partition:
            params["slurm_partition"] = self.partition
        executor.update_parameters(**params)
        jobs = executor.map_array(remote_worker(os.getcwd()), [spec.to_json() for spec in specs])
        report(
            f"submitit ({self.cluster}): {len(jobs)} jobs submitted"
            + (f", array {jobs[0].job_id.split('_')[0]}" if jobs else "")
            + f"; logs in {self.folder}"
        )
        for job, spec in zip(jobs, specs):
            try:
                job.result()
                yield spec, None
            except Exception as err:  # FailedJobError, UncompletedJobError: the job died
                yield spec, f"submitit job {job.job_id}: {type(err).__name__}: {first_line(err)}"


@dataclass(frozen=True)
class ExecutorOptions:
    """What ``initbench sweep`` gives every executor (its command-line options); each takes what it needs.
    A plugin's factory receives the same object."""

    out: Path
    address: str | None = None
    partition: str | None = None
    slurm_cluster: str = "slurm"
    gpus_per_run: int = 1
    cpus_per_run: int | None = None
    timeout_min: int = 240
    workers: int = 1
    threads_per_run: int | None = None


ExecutorFactory = Callable[[ExecutorOptions], Executor]

#: the built-in executors; more come from plugins through the ``GROUP`` entry points
BUILTIN: dict[str, ExecutorFactory] = {
    "inline": lambda o: InlineExecutor(),
    "local": lambda o: LocalExecutor(workers=o.workers, threads_per_run=o.threads_per_run),
    "ray": lambda o: RayExecutor(address=o.address, cpus_per_run=o.cpus_per_run or 1),
    "slurm": lambda o: SlurmExecutor(
        Path(o.out) / ".submitit",
        cluster=o.slurm_cluster,
        partition=o.partition,
        gpus_per_run=o.gpus_per_run,
        cpus_per_run=o.cpus_per_run or 4,
        timeout_min=o.timeout_min,
    ),
}
EXECUTORS = tuple(BUILTIN)
#: the entry-point group a package registers an executor in: ``name = "module:factory"``, where
#: ``factory(options: ExecutorOptions)`` returns an object with ``run(specs, report)`` (``Executor``)
GROUP = "initbench.executors"


def executor_names() -> list[str]:
    """The built-in executors, then those plugins register."""
    from initbench.core.plugins import entry_points_by_name

    return [*BUILTIN, *(name for name in entry_points_by_name(GROUP) if name not in BUILTIN)]


def make_executor(name: str, *, out: Path, **options) -> Executor:
    """The executor called ``name``: a built-in (``EXECUTORS``) or one a plugin registers in the
    ``initbench.sweeps.executors`` entry-point group, given ``ExecutorOptions(out, **options)``.  A name two
    distributions claim (a plugin claiming ``local`` too), a plugin that fails to load, or a factory
    that returns no executor is a ``PluginError`` naming the plugin."""
    from initbench.core.plugins import PluginError, conflict, entry_points_by_name, package

    settings = ExecutorOptions(out=Path(out), **options)
    registered = entry_points_by_name(GROUP).get(name, [])
    if name in BUILTIN and registered:
        raise PluginError(
            f"executor {name!r} is built into initbench and also registered by "
            f"{', '.join(f'{package(ep)} ({ep.value})' for ep in registered)}; a name must mean one "
            f"executor, so uninstall the plugin (pip uninstall {package(registered[0])})"
        )
    if len(registered) > 1:
        raise PluginError(conflict("executor", name, registered))
    if name in BUILTIN:
        return BUILTIN[name](settings)
    if not registered:
        raise PluginError(
            f"unknown executor {name!r}; one of {', '.join(executor_names())} (a plugin adds one "
            f"through the {GROUP!r} entry-point group)"
        )
    ep = registered[0]
    where = f"executor {name!r} ({ep.value}, package {package(ep)})"
    try:
        executor = ep.load()(settings)
    except Exception as err:  # a broken plugin is named, and the CLI exits 2
        raise PluginError(f"{where} failed to load: {type(err).__name__}: {err}") from err
    if not callable(getattr(executor, "run", None)):
        raise PluginError(
            f"{where} returned {type(executor).__name__}, not an executor (an object with "
            "run(specs, report) yielding (spec, crash) pairs; see initbench.sweeps.executors.Executor)"
        )
    return executor
