"""Synthetic results trees of the built-in `smoke` suite: rows a real run would write, no training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from initbench.spec.suite import load_suite
from initbench.store.results import RESULTS_SCHEMA, format_lr, run_stem, write_run

SMOKE = load_suite("smoke")
METRIC = {"addition": "exact_match", "compare_sums": "acc"}


def smoke_row(
    method: str,
    task: str,
    seed: int,
    value: float | None,
    *,
    lr: float | None = None,
    split: str = "test",
    protocol: str | None = None,
    selected_lr: float | None = None,
    **over: Any,
) -> dict[str, Any]:
    """One result row of `smoke` as the harness writes it (``over`` replaces columns)."""
    tag = "" if lr is None and split == "test" else f"/lr{format_lr(lr)}/{split}"
    trains = method != "base"
    row = {f.name: None for f in RESULTS_SCHEMA}
    row.update(
        run_id=f"smoke/{method}/{task}/seed{seed}/{SMOKE.spec_hash}{tag}",
        suite="smoke",
        suite_hash=SMOKE.spec_hash,
        method=method,
        task=task,
        seed=seed,
        config_hash="c",
        status="ok",
        metric=METRIC[task],
        value=value,
        stderr=0.1,
        lm_eval_task=f"initbench_{task}",
        is_reference=method == "base",
        lora_rank=SMOKE.lora.rank if trains else None,
        learning_rate=(SMOKE.budget.optimizer.lr if lr is None else lr) if trains else None,
        optimizer_steps=SMOKE.budget.steps if trains else 0,
        train_tokens=500 if trains else 0,
        calibration_examples=0,
        eval_batch_size=SMOKE.eval.batch_size,
        eval_limit=SMOKE.eval.limit,
        protocol=protocol or ("tuned" if tag else "fixed"),
        phase="final" if split == "test" else "trial",
        eval_split=split,
        selected_lr=selected_lr,
    )
    row.update(over)
    return row


def write_smoke_run(out: Path, row: dict[str, Any]) -> Path:
    """Write ``row``'s run (results and a 6-step curve) where the harness would, and the suite's
    contamination report beside the results as a sweep does; returns the results path."""
    from initbench.inputs.contamination import contamination_report, report_path, write_report

    if not report_path(out, SMOKE).exists():
        write_report(contamination_report(SMOKE), out)
    lr = None if row["protocol"] == "fixed" else row["learning_rate"]
    stem = run_stem(
        out, "smoke", row["method"], row["task"], row["seed"], row["suite_hash"], lr=lr, split=row["eval_split"]
    )
    keys = {k: row[k] for k in ("run_id", "suite", "suite_hash", "method", "task", "seed")}
    curve = [{**keys, "step": i, "loss": 1.0 / i, "lr": 0.01, "tokens": 80 * i} for i in range(1, 7)]
    return write_run(stem, [row], curve)


def fixed_tree(out: Path, methods: tuple[str, ...] = ("base", "lora"), seeds: tuple[int, ...] = (0, 1)) -> Path:
    """A complete fixed-protocol `smoke` tree: every method, task and seed."""
    for m, method in enumerate(methods):
        for task in METRIC:
            for seed in seeds:
                write_smoke_run(out, smoke_row(method, task, seed, 0.25 + 0.25 * m + 0.01 * seed))
    return out


def tamper(path: Path, **change: Any) -> Path:
    """Rewrite the results file ``path`` in place with ``change`` applied to every row (metadata kept)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    rows = [{**row, **change} for row in table.to_pylist()]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return path


def tuned_tree(
    out: Path,
    chosen: dict[tuple[str, str], float],
    grid: tuple[float, ...] = (0.001, 0.01, 0.1),
    seeds: tuple[int, ...] = (0, 1),
    final: Callable[[str, str, int], float] | None = None,
    columns: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """A complete tuned-protocol `smoke` tree: ``base`` at the fixed protocol, and for every (method,
    task) of ``chosen`` its trials on ``grid`` (seed 0), its selection file and its tuned finals at the
    chosen rate (value ``final(method, task, seed)``, default 0.6 + 0.01 seed), beside its runs at the
    suite's rate (0.1 lower).  ``columns``: per method, columns every row of it gets (cost, forgetting)."""
    import json

    from initbench.selection.protocol import selection_path

    at_default = (
        (lambda method, task, seed: 0.5 + 0.01 * seed)
        if final is None
        else (lambda method, task, seed: final(method, task, seed) - 0.1)
    )
    final = final or (lambda method, task, seed: 0.6 + 0.01 * seed)
    columns = columns or {}
    for task in METRIC:
        for seed in seeds:
            write_smoke_run(out, smoke_row("base", task, seed, 0.1, **columns.get("base", {})))
    for (method, task), lr in chosen.items():
        extra = columns.get(method, {})
        for rate in grid:
            write_smoke_run(
                out,
                smoke_row(method, task, 0, 0.5 + (0.1 if rate == lr else 0.0), lr=rate, split="validation", **extra),
            )
        for seed in seeds:
            write_smoke_run(
                out,
                smoke_row(
                    method, task, seed, final(method, task, seed), lr=lr, protocol="tuned", selected_lr=lr, **extra
                ),
            )
            write_smoke_run(out, smoke_row(method, task, seed, at_default(method, task, seed), **extra))
        path = selection_path(out, "smoke", method, task, SMOKE.spec_hash)
        path.write_text(
            json.dumps(
                {
                    "suite": "smoke",
                    "suite_hash": SMOKE.spec_hash,
                    "method": method,
                    "task": task,
                    "metric": METRIC[task],
                    "higher_is_better": True,
                    "split": "validation",
                    "default_lr": SMOKE.budget.optimizer.lr,
                    "tuning_seeds": [0],
                    "selected_lr": lr,
                    "reason": "synthetic",
                    "grid": {"kind": "fixed", "rates": list(grid)},
                    "trials": [
                        {
                            "lr": rate,
                            "scores": [0.5 + (0.1 if rate == lr else 0.0)],
                            "mean": 0.5 + (0.1 if rate == lr else 0.0),
                        }
                        for rate in grid
                    ],
                }
            )
        )
    return out


def write_curvature(
    out: Path,
    method: str,
    task: str,
    seed: int,
    lambda_max: float,
    *,
    converged: bool = True,
    suite_hash: str | None = None,
) -> Path:
    """One curvature measurement of `smoke` where ``initbench curvature`` writes it (no measuring)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from initbench.run.curvature_table import SCHEMA, curvature_path

    row = {f.name: None for f in SCHEMA}
    row.update(
        suite="smoke",
        suite_hash=suite_hash or SMOKE.spec_hash,
        method=method,
        task=task,
        seed=seed,
        learning_rate=SMOKE.budget.optimizer.lr,
        lambda_max=lambda_max,
        eigenvalues=json.dumps([lambda_max]),
        iterations=5,
        hvps=5,
        batches=4,
        forward_passes=20,
        seconds=0.1,
        relative_change=1e-3 if converged else 0.2,
        converged=converged,
        trainable_params=1000,
        data_hash="d",
    )
    path = curvature_path(out, SMOKE, method, task, seed)
    if suite_hash is not None:
        path = path.with_name(path.name.replace(SMOKE.spec_hash, suite_hash))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([row], schema=SCHEMA), path)
    return path


def synthetic_row(method: str, task: str, seed: int, value: float, metric: str = "acc", **over: Any) -> dict[str, Any]:
    """One ok final test row of a made-up suite ``s`` (spec hash ``h``), fixed protocol; ``over`` replaces
    columns.  For leaderboard statistics that need values, not a real suite."""
    row = {f.name: None for f in RESULTS_SCHEMA}
    row.update(
        run_id=f"s/{method}/{task}/seed{seed}/h",
        suite="s",
        suite_hash="h",
        method=method,
        task=task,
        seed=seed,
        config_hash="c",
        status="ok",
        metric=metric,
        value=value,
        is_reference=method == "base",
        protocol="fixed",
        phase="final",
        eval_split="test",
    )
    row.update(over)
    return row
