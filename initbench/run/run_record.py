"""A run's record: the columns known before it computes, how a failure reads, and its rows on disk.

:func:`metadata` is what identifies a run and what is needed to rerun it (run id, hashes, settings,
versions, device, code identity); the harness adds what the run measures, and :func:`write` turns
the record into the run's result rows (one per metric) and curve (``initbench.store.results``).
:func:`record_crash` writes the ``failed`` row of a run whose process died before it could.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
import traceback
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from initbench.core import provenance
from initbench.core.seeding import pick_device
from initbench.inputs.evaluation import Score
from initbench.method.api import InitMethod, LoraSettings
from initbench.run import execution
from initbench.run.attach import MethodFailure, run_lora_settings
from initbench.spec.budget import Spend
from initbench.spec.suite import Suite, TaskSpec
from initbench.store import samples
from initbench.store.results import format_lr, run_stem, write_run
from initbench.store.rows import ResultRow

#: the columns that key a run's curve points to its results
KEY_COLUMNS = ("run_id", "suite", "suite_hash", "method", "task", "seed")


def metadata(
    suite: Suite,
    method: InitMethod,
    task: TaskSpec,
    seed: int,
    lora: LoraSettings,
    lr: float | None,
    split: str,
    protocol: str | None,
    selected_lr: float | None,
    device: torch.device,
    determinism: dict[str, object],
) -> ResultRow:
    """What identifies a run and what is needed to rerun it: the columns known before it starts.

    ``lr`` None is the suite's rate; a rate other than that or a split other than ``test`` tags
    the run id (and file stem); ``protocol`` defaults to ``fixed`` for an untagged run, else ``tuned``."""
    if split not in ("test", "validation"):
        raise ValueError(f"split must be 'test' or 'validation', got {split!r}")
    tag = "" if lr is None and split == "test" else f"/lr{format_lr(lr)}/{split}"
    lr = suite.budget.optimizer.lr if lr is None else float(lr)
    return {
        "run_id": f"{suite.name}/{method.name}/{task.name}/seed{seed}/{suite.spec_hash}{tag}",
        "suite": suite.name,
        "suite_hash": suite.spec_hash,
        "method": method.name,
        "task": task.name,
        "seed": seed,
        "config_hash": config_hash(suite, method, task, seed, lora, lr, split),
        "method_version": method.version,
        "method_package": type(method).__module__.split(".")[0],
        "is_reference": method.is_reference,
        "lm_eval_task": task.lm_eval_task,
        "dtype": suite.model.dtype,
        "lora_rank": lora.rank if method.attaches_lora and method.trains else None,
        "lora_alpha": lora.alpha if method.attaches_lora and method.trains else None,
        "lora_scale": lora.scale if method.attaches_lora and method.trains else None,
        "use_rslora": lora.use_rslora,
        "target_modules": ",".join(lora.target_modules),
        "learning_rate": lr if method.trains else None,
        "eval_batch_size": suite.eval.batch_size,
        "eval_limit": suite.eval.limit,
        "device": device.type,
        "device_name": device_name(device),
        "determinism": json.dumps(determinism, sort_keys=True),
        "execution": json.dumps(execution.execution_settings(device), sort_keys=True),
        "start_time": datetime.now(timezone.utc),
        **versions(),
        **provenance.columns(),
        "protocol": protocol or ("tuned" if tag else "fixed"),
        "phase": "final" if split == "test" else "trial",
        "eval_split": split,
        "selected_lr": selected_lr,
    }


def config_hash(
    suite: Suite, method: InitMethod, task: TaskSpec, seed: int, lora: LoraSettings, lr: float, split: str = "test"
) -> str:
    """SHA-256 (16 hex) of what configures a run: spec hash, method and version, task, seed, LoRA, rate[, split]."""
    payload = [suite.spec_hash, method.name, method.version, task.name, seed, lora.__dict__, lr]
    if split != "test":
        payload.append(split)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    """The versions of initbench, torch, transformers, peft, lm-eval and Python ("" where not installed)."""

    def get(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return ""

    return {
        "initbench_version": get("initbench"),
        "torch_version": torch.__version__,
        "transformers_version": get("transformers"),
        "peft_version": get("peft"),
        "lm_eval_version": get("lm_eval"),
        "python_version": sys.version.split()[0],
    }


def device_name(device: torch.device) -> str:
    """The GPU's name on CUDA; on CPU its model and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{provenance.cpu_identity()['cpu_model']} ({torch.get_num_threads()} threads)"


def peak_memory(device: torch.device) -> int:
    """Peak GPU memory of this run on CUDA; on CPU, the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def failure_text(err: Exception) -> str:
    """A failed run's ``error``: a method's own failure as it names itself, else where initbench raised."""
    if isinstance(err, MethodFailure):
        return str(err)
    frame = traceback.extract_tb(err.__traceback__)[-1]
    return f"{type(err).__name__}: {err} (at {Path(frame.filename).name}:{frame.lineno})"


def write(
    stem: Path,
    record: ResultRow,
    spend: Spend,
    status: str,
    scores: list[Score],
    curve: list[dict[str, float]],
    device: torch.device,
    wall_start: float,
) -> Path:
    """Complete ``record`` with what the run spent, its peak memory, wall time and ``status``, and write
    it as one row per score (one row without a metric when there is none) beside its curve."""
    record.update(spend.columns())
    record["peak_memory_bytes"] = peak_memory(device)
    record["wall_seconds"] = time.perf_counter() - wall_start
    record["status"] = status
    rows = [{**record, "metric": s.metric, "value": s.value, "stderr": s.stderr} for s in scores] or [record]
    keys = {k: record[k] for k in KEY_COLUMNS}
    return write_run(stem, rows, [{**keys, **point} for point in curve])


def record_crash(
    suite: Suite,
    method: InitMethod,
    task: TaskSpec,
    seed: int,
    out: Path,
    reason: str,
    *,
    lr: float | None = None,
    split: str = "test",
    protocol: str | None = None,
    selected_lr: float | None = None,
) -> Path:
    """Write a ``failed`` result for a run whose process died before it could write one itself
    (killed, out of memory, a segfault): what an executor calls, so the grid shows the failure
    and its reason, and a rerun redoes just that run."""
    lora, _ = run_lora_settings(suite, method)
    record = metadata(suite, method, task, seed, lora, lr, split, protocol, selected_lr, pick_device(), {})
    record.update(Spend().columns(), status="failed", error=reason)
    stem = run_stem(out, suite.name, method.name, task.name, seed, suite.spec_hash, lr=lr, split=split)
    samples.discard(stem)  # written before the process died, of a run recorded as failed
    return write_run(stem, [record], [])
