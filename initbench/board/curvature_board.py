"""The leaderboard's curvature column (issue 17), from a results table and a curvature table.

Per (method, task) of a suite with curvature measured (``initbench.run.curvature_table``): ``lambda_max``
at init (the mean over the measured seeds, and how many of those estimates converged), the rate it
predicts (``initbench.selection.lr_prior.predicted_lr``, calibrated on lora's tuned rate as the rows record it:
its tuned finals' ``selected_lr``, else the suite's default rate), the rate tuning chose, and whether
that was the lowest or highest rate of the grid it was chosen from (the trials' rates).  Per task,
``lr_prior.fit`` of the chosen rate on ``1 / lambda_max`` over the methods.  Rows only, no selection
files: a results folder and a published version (its ``curvature.parquet``) give the same section.
"""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc

from initbench.board.board import CurvatureCell
from initbench.selection.lr_prior import PriorFit, edge_side, fit, predicted_lr
from initbench.selection.tuning_grid import REFERENCE


def curvature_cells(suite_rows: pa.Table, curvature: pa.Table | None) -> list[CurvatureCell]:
    """One cell per (method, task) measured for the suite and spec of ``suite_rows`` (the rows of one
    (suite, spec hash)); empty when nothing was measured for it."""
    if curvature is None or curvature.num_rows == 0 or suite_rows.num_rows == 0:
        return []
    suite, spec = suite_rows["suite"][0].as_py(), suite_rows["suite_hash"][0].as_py()
    mine = curvature.filter(pc.and_(pc.equal(curvature["suite"], suite), pc.equal(curvature["suite_hash"], spec)))
    measured: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in mine.select(["method", "task", "lambda_max", "converged"]).to_pylist():
        measured[(row["method"], row["task"])].append(row)
    if not measured:
        return []
    chosen, tried, default_lr = _tuning_of(suite_rows)
    lambdas = {key: sum(r["lambda_max"] for r in rows) / len(rows) for key, rows in measured.items()}
    cells = []
    for (method, task), rows in sorted(measured.items(), key=lambda item: (item[0][1], item[0][0])):
        reference_lr, source = (
            (chosen[(REFERENCE, task)], "tuned") if (REFERENCE, task) in chosen else (default_lr, "suite default")
        )
        grid = sorted(tried.get((method, task), ()))
        pick = chosen.get((method, task))
        cells.append(
            CurvatureCell(
                method=method,
                task=task,
                lambda_max=lambdas[(method, task)],
                seeds=len(rows),
                converged=sum(bool(r["converged"]) for r in rows),
                predicted_lr=_predicted(reference_lr, lambdas.get((REFERENCE, task)), lambdas[(method, task)]),
                reference=REFERENCE,
                reference_lr_source=source,
                chosen_lr=pick,
                grid=grid,
                edge=_edge(pick, grid),
            )
        )
    return cells


def curvature_fits(cells: list[CurvatureCell]) -> dict[str, PriorFit | None]:
    """Per task, ``lr_prior.fit`` of the chosen rate on 1 / lambda_max over the methods with both (a
    positive lambda_max and a chosen rate); None with fewer than three such methods."""
    points: dict[str, list[tuple[float, float]]] = {}
    for cell in cells:
        pairs = points.setdefault(cell.task, [])
        if cell.chosen_lr and cell.lambda_max > 0:
            pairs.append((cell.lambda_max, cell.chosen_lr))
    return {task: fit(*zip(*pairs)) if len(pairs) >= 3 else None for task, pairs in sorted(points.items())}


def _tuning_of(
    suite_rows: pa.Table,
) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], set[float]], float | None]:
    """(method, task) -> the chosen rate (tuned finals' ``selected_lr``), -> the rates of its trials;
    and the suite's default rate (the rate of the fixed protocol's training runs), None without one."""
    rows = suite_rows.select(["method", "task", "protocol", "phase", "learning_rate", "selected_lr"]).to_pylist()
    chosen = {
        (r["method"], r["task"]): r["selected_lr"]
        for r in rows
        if r["protocol"] == "tuned" and r["phase"] == "final" and r["selected_lr"] is not None
    }
    tried: dict[tuple[str, str], set[float]] = defaultdict(set)
    for r in rows:
        if r["phase"] == "trial" and r["learning_rate"] is not None:
            tried[(r["method"], r["task"])].add(r["learning_rate"])
    default_lr = next(
        (
            r["learning_rate"]
            for r in rows
            if r["protocol"] == "fixed" and r["phase"] == "final" and r["learning_rate"] is not None
        ),
        None,
    )
    return chosen, tried, default_lr


def _predicted(reference_lr: float | None, reference_lambda: float | None, lambda_max: float) -> float | None:
    """lr-prior's rate, None where it is undefined (no calibration, or a lambda_max that is not positive)."""
    if reference_lr is None or reference_lambda is None:
        return None
    try:
        return predicted_lr(reference_lr, reference_lambda, lambda_max)
    except ValueError:
        return None


def _edge(chosen: float | None, grid: list[float]) -> str:
    """``lowest`` / ``highest`` (``lr_prior.edge_side``) or ``no`` for a chosen rate in its grid; empty
    without a choice or a grid."""
    if chosen is None or not grid:
        return ""
    return edge_side(chosen, grid) or "no"
