"""How a run computes on its device: precision, torch.compile, threads, init and training reuse.

Every setting is an environment variable, so the CLI sets it once and every worker (a local
process, a Ray task, a SLURM job) inherits it; each is recorded in the results (the ``execution``
column, schema v5, and the provenance columns of schema v6, ``initbench.core.provenance``):

- ``INITBENCH_PRECISION`` (``--precision``): ``float32`` or ``bf16-autocast`` (training forward and
  loss under ``torch.autocast(dtype=bfloat16)``; weights, gradients and AdamW stay float32).  Unset:
  ``bf16-autocast`` on CUDA (as before), ``float32`` elsewhere.  Evaluation always runs in the
  model's dtype.
- ``INITBENCH_COMPILE`` (``--compile``): ``1`` trains through ``torch.compile`` of the loss.  It pays
  only when a process trains long enough to amortize the compile (~97 s for SmolLM2-135M on the
  2-core CPU of issue 13: at 314 vs 377 tok/s bf16 that is about 180k training tokens, 3.5x a
  ``mini`` run's <=51k; a new peft model per run recompiles), i.e. for long runs, not a grid of
  short ones.
- ``INITBENCH_FAST``: ``1`` switches on the training fast path (``initbench.run.train``: the output head
  only at labelled positions, fused AdamW on CUDA).
- ``INITBENCH_THREADS`` (``--threads-per-run``): the torch intra-op thread count of a run.
- ``INITBENCH_INIT_REUSE``: ``0`` switches off both reuses: of one initialization across the
  learning-rate trials of a (method, task, seed) (``initbench.run.init_cache``), and of a trained model
  across the runs that train it identically, e.g. a tuning trial and the final at its rate and seed
  (``initbench.run.train_cache``); on by default.

:func:`execution_settings` is what a row records of them (the ``execution`` column), and
:func:`execution_environment` / :func:`rerun_environment` turn a recorded row back into them, for
``initbench reproduce``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from initbench.core import provenance

PRECISION_ENV = "INITBENCH_PRECISION"
COMPILE_ENV = "INITBENCH_COMPILE"
THREADS_ENV = "INITBENCH_THREADS"
FAST_ENV = "INITBENCH_FAST"
INIT_REUSE_ENV = "INITBENCH_INIT_REUSE"
PRECISIONS = ("float32", "bf16-autocast")


class ExecutionError(ValueError):
    """An execution setting has a value initbench does not know."""


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ExecutionError(f"${name} must be 1 or 0, got {os.environ[name]!r}")


def precision(device: torch.device) -> str:
    """The training precision in force: ``$INITBENCH_PRECISION``, else bf16 autocast on CUDA only."""
    value = os.environ.get(PRECISION_ENV, "").strip()
    if not value:
        return "bf16-autocast" if device.type == "cuda" else "float32"
    if value not in PRECISIONS:
        raise ExecutionError(f"${PRECISION_ENV} must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of the training forward for the precision in force."""
    if precision(device) == "bf16-autocast":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


#: CPU flags (``initbench.core.provenance``) with native bf16 matrix kernels: AVX512-BF16, AMX, Arm BF16
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def bf16_warning(device: torch.device) -> str | None:
    """A line to print when bf16 autocast is asked for on a CPU without native bf16 kernels (it
    then runs emulated, usually slower than float32); None otherwise."""
    if device.type != "cpu" or precision(device) != "bf16-autocast":
        return None
    flags = set(provenance.cpu_identity()["cpu_flags"].split(","))
    if flags & set(BF16_CPU_FLAGS):
        return None
    return (
        f"this CPU has none of {', '.join(BF16_CPU_FLAGS)}: bf16 autocast runs emulated and is likely "
        "slower than float32 here"
    )


def compile_enabled() -> bool:
    """Whether ``$INITBENCH_COMPILE`` asks for ``torch.compile`` of the training loss."""
    return _flag(COMPILE_ENV, False)


def fast_path() -> bool:
    """Whether ``INITBENCH_FAST`` switches the training fast path on."""
    return os.environ.get(FAST_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def execution_settings(device: torch.device, optimizer: torch.optim.Optimizer | None = None) -> dict[str, object]:
    """How the training loop computes (for the results' ``execution`` column); ``fused_adamw`` is read
    from the optimizer that ran (a method's own, e.g. LoRA+, may not be fused).  ``autocast`` is the
    precision (``bf16`` or None for float32), ``compile`` whether the loss ran through torch.compile."""
    return {
        "loss": "labelled-positions" if fast_path() else "full-logits",
        "fused_adamw": bool(optimizer is not None and optimizer.defaults.get("fused")),
        "autocast": "bf16" if precision(device) == "bf16-autocast" else None,
        "compile": compile_enabled(),
    }


def init_reuse_enabled() -> bool:
    """Whether an initialization may be reused across learning-rate trials, and a trained model across
    runs that train it identically (default on)."""
    return _flag(INIT_REUSE_ENV, True)


def apply_threads() -> int:
    """Set torch's intra-op threads to ``$INITBENCH_THREADS`` where given; returns the count in force."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ExecutionError(f"${THREADS_ENV} must be a positive integer, got {value!r}")
        if torch.get_num_threads() != int(value):
            torch.set_num_threads(int(value))
    return torch.get_num_threads()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; ``os.cpu_count()`` where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_threads(workers: int, threads_per_run: int | None) -> int:
    """Threads per run for ``workers`` parallel runs: ``threads_per_run``, or the cores divided
    evenly (at most ``$OMP_NUM_THREADS`` where the caller set it); raises if the product would
    oversubscribe the cores."""
    cores = available_cores()
    if workers < 1:
        raise ExecutionError(f"--workers must be at least 1, got {workers}")
    threads = threads_per_run
    if threads is None:
        threads = max(1, cores // workers)
        omp = os.environ.get("OMP_NUM_THREADS", "").strip()
        if omp.isdigit() and int(omp) >= 1:
            threads = min(threads, int(omp))
    if threads < 1:
        raise ExecutionError(f"--threads-per-run must be at least 1, got {threads}")
    if workers * threads > cores:
        raise ExecutionError(
            f"--workers {workers} x --threads-per-run {threads} = {workers * threads} threads "
            f"oversubscribes the {cores} cores this process may use"
        )
    return threads


def worker_environment(threads: int) -> dict[str, str]:
    """Environment variables that pin a worker process to ``threads`` threads (torch, OpenMP, MKL)."""
    return {THREADS_ENV: str(threads), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def execution_environment(row: dict[str, Any]) -> dict[str, str]:
    """The ``INITBENCH_*`` settings that rerun a row in its recorded execution mode (precision,
    compile, loss path, and the torch thread count, which changes bf16 results on a CPU), for
    ``reproduce``; empty where the row does not say."""
    settings = provenance.json_object(row.get("execution"))
    env = {}
    if row.get("torch_threads"):
        env[THREADS_ENV] = str(row["torch_threads"])
    if "autocast" in settings:
        env[PRECISION_ENV] = "bf16-autocast" if settings["autocast"] == "bf16" else "float32"
    if "compile" in settings:
        env[COMPILE_ENV] = "1" if settings["compile"] else "0"
    if "loss" in settings:
        env[FAST_ENV] = "1" if settings["loss"] == "labelled-positions" else "0"
    return env


@contextlib.contextmanager
def rerun_environment(row: dict[str, Any]) -> Iterator[None]:
    """Run the body with :func:`execution_environment` of ``row`` set, then restore the environment."""
    settings = execution_environment(row)
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
