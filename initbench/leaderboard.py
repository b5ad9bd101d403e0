"""Leaderboard tables (first cut): per task and overall, mean +/- std over seeds per method.

A thin layer over pyarrow's group-by; the statistical protocol (bootstrap
intervals, IQM, significance) grows from ``aggregate``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from tabulate import tabulate

from initbench.results import read_results


def aggregate(table: pa.Table) -> pa.Table:
    """Mean, std (sample, ddof=1) and seed count per (suite, suite_hash, method, task, metric) over ok runs."""
    ok = table.filter(pc.and_(pc.equal(table["status"], "ok"), pc.is_valid(table["metric"])))
    keys = ["suite", "suite_hash", "method", "is_reference", "task", "metric"]
    grouped = ok.group_by(keys).aggregate([("value", "mean"), ("value", "stddev", pc.VarianceOptions(ddof=1)),
                                           ("seed", "count_distinct")])
    return grouped.rename_columns(keys + ["mean", "std", "seeds"]).sort_by(
        [(k, "ascending") for k in ("suite", "suite_hash", "task", "metric", "method")]
    )


def failures(table: pa.Table) -> pa.Table:
    """Runs that did not finish ok, one row per run, with their reason."""
    bad = table.filter(pc.not_equal(table["status"], "ok"))
    return bad.select(["suite", "method", "task", "seed", "status", "error"]).group_by(
        ["suite", "method", "task", "seed", "status", "error"]).aggregate([])


def render(path: Path, fmt: str = "github") -> str:
    """The leaderboard of every results file under ``path`` as text (tabulate format ``fmt``)."""
    table = read_results(path)
    if table.num_rows == 0:
        return f"no results under {path}"
    sections = []
    summary = aggregate(table).to_pylist()
    for suite, suite_hash in sorted({(r["suite"], r["suite_hash"]) for r in summary}):
        rows = [r for r in summary if r["suite"] == suite and r["suite_hash"] == suite_hash]
        sections.append(f"## Suite `{suite}` (spec {suite_hash})\n\n" + _suite_table(rows, fmt))
    failed = failures(table).to_pylist()
    if failed:
        lines = [[r["suite"], r["method"], r["task"], r["seed"], r["status"], r["error"] or ""] for r in failed]
        sections.append("## Runs not ok\n\n" + tabulate(lines, ["suite", "method", "task", "seed", "status", "reason"],
                                                       tablefmt=fmt))
    return "\n\n".join(sections)


def _suite_table(rows: list[dict], fmt: str) -> str:
    columns = sorted({(r["task"], r["metric"]) for r in rows})
    methods = sorted({(not r["is_reference"], r["method"]) for r in rows})  # reference rows first
    cell = {(r["method"], r["task"], r["metric"]): r for r in rows}
    lines = []
    for not_reference, method in methods:
        line = [method + ("" if not_reference else " (reference)")]
        task_means = []
        for task, metric in columns:
            r = cell.get((method, task, metric))
            line.append(_fmt(r) if r else "")
            if r:
                task_means.append(r["mean"])
        line.append(f"{sum(task_means) / len(task_means):.4f}" if len(task_means) == len(columns) else "")
        lines.append(line)
    headers = ["method"] + [f"{task} ({metric})" for task, metric in columns] + ["mean over tasks"]
    return tabulate(lines, headers, tablefmt=fmt)


def _fmt(r: dict) -> str:
    std = r["std"]
    spread = f" ± {std:.4f}" if std is not None and not math.isnan(std) else ""
    return f"{r['mean']:.4f}{spread} (n={r['seeds']})"
