"""Curvature at init per (method, task, seed), measured through the harness and stored as a table.

One measurement is the method's own init (the harness's seeded attach and ``initialize``, exactly as a
run at the suite's rate starts) followed by :func:`initbench.run.curvature.top_hessian_eigenvalues` on the
first ``batches`` training batches that run would see.  Each measurement is one Parquet file beside
the runs, ``<out>/<suite>/<method>/<task>/seed<seed>-<spec hash>.curvature.parquet`` (written
atomically; skipped when present), keyed like the runs, so ``read_table`` gathers a results folder's
curvature the way ``counted.read_results`` gathers its scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from initbench.core import atomic
from initbench.spec.suite import Suite, TaskSpec

if TYPE_CHECKING:  # measuring needs torch; reading the table (leaderboard, lr-prior) does not
    from initbench.method.api import InitMethod

SUFFIX = ".curvature.parquet"

SCHEMA = pa.schema(
    [
        pa.field("suite", pa.string(), nullable=False),
        pa.field("suite_hash", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("learning_rate", pa.float64()),  # the rate ctx.lr carried into initialize
        pa.field("lambda_max", pa.float64()),
        pa.field("eigenvalues", pa.string()),  # JSON list, descending
        pa.field("iterations", pa.int64()),
        pa.field("hvps", pa.int64()),
        pa.field("batches", pa.int64()),
        pa.field("forward_passes", pa.int64()),
        pa.field("seconds", pa.float64()),
        pa.field("relative_change", pa.float64()),
        pa.field("converged", pa.bool_()),
        pa.field("trainable_params", pa.int64()),
        pa.field("data_hash", pa.string()),
        # which code and machine measured it (initbench.core.provenance, as in the results rows)
        pa.field("code_commit", pa.string()),
        pa.field("code_dirty", pa.bool_()),
        pa.field("code_hash", pa.string()),
        pa.field("torch_threads", pa.int64()),
        pa.field("cpu_model", pa.string()),
        pa.field("cpu_flags", pa.string()),
        pa.field("cpu_capability", pa.string()),
    ]
)


def curvature_path(out: Path, suite: Suite, method: str, task: str, seed: int) -> Path:
    return Path(out) / suite.name / method / task / f"seed{seed}-{suite.spec_hash}{SUFFIX}"


class NotMeasurable(ValueError):
    """A method curvature at init does not apply to: it trains no adapter (``base``, ``full-ft``)."""


def measure(
    suite: Suite,
    method: InitMethod,
    task: TaskSpec,
    seed: int,
    *,
    batches: int = 4,
    k: int = 1,
    max_iterations: int = 20,
    tol: float = 1e-2,
    lr: float | None = None,
) -> dict[str, Any]:
    """Initialize ``method`` as a run of (task, seed) at rate ``lr`` (default: the suite's) starts and
    estimate the top-``k`` Hessian eigenvalues of the training loss on its first ``batches`` batches."""
    import torch

    from initbench.core import provenance
    from initbench.core.seeding import pick_device, seed_everything
    from initbench.inputs import data as task_data
    from initbench.inputs.models import linear_params
    from initbench.run.attach import attach_and_initialize, lora_settings
    from initbench.run.curvature import top_hessian_eigenvalues
    from initbench.run.lending import base_model, return_base_model
    from initbench.spec.budget import Spend

    if not (method.trains and method.attaches_lora):
        raise NotMeasurable(f"curvature: method {method.name!r} trains no adapter (nothing to measure)")
    device = pick_device()
    lr = suite.budget.optimizer.lr if lr is None else float(lr)
    data = task_data.materialize(task, suite.path)
    loaded = base_model(suite, device)
    model = loaded.model
    try:
        seed_everything(seed)
        examples = task_data.tokenize_records(data.records("train"), loaded.tokenizer, suite.budget.max_length)
        lora = lora_settings(suite.lora, method, suite.family)
        model, _ = attach_and_initialize(
            model,
            loaded.tokenizer,
            method,
            lora,
            seed=seed,
            examples=examples,
            budget=suite.budget,
            lr=lr,
            spend=Spend(),
            base_params=linear_params(model),
            device=device,
            family=suite.family,
        )
        stream = task_data.batches(examples, suite.budget.batch_size, batches, seed, loaded.tokenizer.pad_token_id)
        measured = [{key: value.to(device) for key, value in batch.items()} for batch in stream]
        estimate = top_hessian_eigenvalues(
            model, measured, k=k, max_iterations=max_iterations, tol=tol, generator=torch.Generator().manual_seed(seed)
        )
    finally:
        return_base_model(loaded, model)
    return {
        "suite": suite.name,
        "suite_hash": suite.spec_hash,
        "method": method.name,
        "task": task.name,
        "seed": seed,
        "learning_rate": lr,
        "lambda_max": estimate.lambda_max,
        "eigenvalues": json.dumps(estimate.eigenvalues),
        "iterations": estimate.iterations,
        "hvps": estimate.hvps,
        "batches": estimate.batches,
        "forward_passes": estimate.passes,
        "seconds": estimate.seconds,
        "relative_change": estimate.relative_change,
        "converged": estimate.converged,
        "trainable_params": estimate.trainable_params,
        "data_hash": data.content_hash,
        **provenance.columns(),
    }


def measure_and_write(
    out: Path, suite: Suite, method: InitMethod, task: TaskSpec, seed: int, *, force: bool = False, **options: Any
) -> tuple[dict[str, Any], bool]:
    """Measure unless the file is already there; returns (its row, whether it was measured now)."""
    path = curvature_path(out, suite, method.name, task.name, seed)
    if path.exists() and not force:
        return pq.read_table(path, schema=SCHEMA).to_pylist()[0], False
    row = measure(suite, method, task, seed, **options)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(path) as tmp:
        pq.write_table(pa.Table.from_pylist([row], schema=SCHEMA), tmp)
    return row, True


def read_table(results: Path) -> pa.Table:
    """Every curvature measurement under ``results`` (an empty table when there is none)."""
    files = sorted(Path(results).rglob(f"*{SUFFIX}"))
    if not files:
        return SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=SCHEMA) for f in files])


def mean_lambda(table: pa.Table, suite_hash: str | None = None) -> dict[tuple[str, str], float]:
    """Mean ``lambda_max`` over seeds per (method, task), optionally of one suite spec."""
    sums: dict[tuple[str, str], list[float]] = {}
    for row in table.to_pylist():
        if suite_hash is None or row["suite_hash"] == suite_hash:
            sums.setdefault((row["method"], row["task"]), []).append(row["lambda_max"])
    return {key: sum(v) / len(v) for key, v in sums.items()}
