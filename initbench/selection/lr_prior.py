"""A learning-rate prior from curvature at init (``initbench.run.curvature``).

"Learning Rate Matters" (arXiv 2602.04998) finds a method's best rate close to inversely proportional
to ``lambda_max`` of the loss Hessian at init.  Calibrated on a reference method whose tuned rate is
known (``lora`` on the same suite and task), the prior for method M is

    lr_M = lr_ref * lambda_ref / lambda_M

and a curvature-centred grid is the suite's grid shape (same number of points, same neighbour ratio;
``tuning: {grid: curvature-centred, points: K}`` sets it) moved so that its centre is ``lr_M``: the
same tuning allowance for every method (``initbench.selection.tuning_grid`` tunes on it).  ``fit`` measures
whether the claim holds on a set of (lambda_max, tuned rate) points: a least-squares line of
``log lr`` on ``log(1 / lambda)``, its R^2, and Pearson's r with a Fisher-z 95% interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.stats

from initbench.spec.suite import TUNING_GRIDS

if TYPE_CHECKING:  # pragma: no cover
    from initbench.spec.suite import Suite, TuningSpec

#: the kind a selection file records for a curvature-centred grid (``initbench.selection.tuning_grid``)
CURVATURE_CENTRED = TUNING_GRIDS[1]


def predicted_lr(lr_reference: float, lambda_reference: float, lambda_method: float) -> float:
    """The rate curvature predicts for a method: ``lr_ref * lambda_ref / lambda_method``."""
    for name, value in (
        ("lr_reference", lr_reference),
        ("lambda_reference", lambda_reference),
        ("lambda_method", lambda_method),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"lr prior: {name} must be a positive finite number, got {value}")
    return lr_reference * lambda_reference / lambda_method


def centred_grid(centre: float, points: int, ratio: float) -> list[float]:
    """``points`` log-spaced rates with neighbour ratio ``ratio`` whose geometric centre is ``centre``
    (an odd count contains ``centre`` itself)."""
    if points < 1 or ratio <= 1 or centre <= 0:
        raise ValueError(f"centred grid: need points >= 1, ratio > 1, centre > 0; got {points}, {ratio}, {centre}")
    offsets = [i - (points - 1) / 2 for i in range(points)]
    return [float(f"{centre * ratio**k:.6g}") for k in offsets]


def grid_shape(grid: Sequence[float]) -> tuple[int, float]:
    """(number of points, geometric-mean neighbour ratio) of an ascending log-spaced grid."""
    if len(grid) < 2:
        raise ValueError("a grid shape needs at least two rates")
    return len(grid), (grid[-1] / grid[0]) ** (1 / (len(grid) - 1))


def edge_side(chosen: float, grid: Sequence[float]) -> str:
    """``"lowest"`` or ``"highest"`` when the chosen rate is the smallest or the largest of its grid
    (the optimum may lie outside), else ``""``."""
    if math.isclose(chosen, min(grid), rel_tol=1e-9):
        return "lowest"
    return "highest" if math.isclose(chosen, max(grid), rel_tol=1e-9) else ""


def on_edge(chosen: float, grid: Sequence[float]) -> bool:
    """Whether the chosen rate is the smallest or the largest of its grid (:func:`edge_side`)."""
    return bool(edge_side(chosen, grid))


@dataclass(frozen=True)
class PriorFit:
    """How well ``log lr`` follows ``log(1 / lambda_max)`` over a set of methods."""

    n: int
    slope: float  # 1.0 is the paper's claim (inverse proportionality)
    intercept: float
    r_squared: float
    pearson_r: float
    r_ci: tuple[float, float]  # 95%, Fisher z; (nan, nan) with n <= 3


def fit(lambdas: Sequence[float], tuned_lrs: Sequence[float]) -> PriorFit:
    """Least squares of ``log(tuned lr)`` on ``log(1 / lambda_max)``, with Pearson's r and its interval."""
    if len(lambdas) != len(tuned_lrs) or len(lambdas) < 3:
        raise ValueError("lr prior fit: need at least three (lambda_max, tuned lr) pairs of equal length")
    x = -np.log(np.asarray(lambdas, dtype=float))
    y = np.log(np.asarray(tuned_lrs, dtype=float))
    line = scipy.stats.linregress(x, y)
    r = float(line.rvalue)
    if len(x) > 3 and abs(r) < 1:
        half = 1.959964 / math.sqrt(len(x) - 3)
        ci = (math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half))
    else:
        ci = (math.nan, math.nan)
    return PriorFit(len(x), float(line.slope), float(line.intercept), r * r, r, ci)


#: (points, neighbour ratio) of a centred grid when the suite has no tuning grid: 5 rates a factor 3 apart,
#: 9x either side of the centre (issue 13's "30x below to 3x above" spans the same width)
DEFAULT_GRID_SHAPE = (5, 3.0)


@dataclass(frozen=True)
class Prior:
    """The rate curvature predicts for one (method, task) and the grid centred on it."""

    method: str
    task: str
    lambda_max: float
    reference_lambda: float
    reference_lr: float
    reference_lr_source: str  # "tuned" (the reference's selection file) or "suite default"
    predicted_lr: float
    grid: list[float]


def grid_shape_of(tuning: TuningSpec | None, points: int | None = None) -> tuple[int, float]:
    """(points, neighbour ratio) of the grids centred under a suite's ``tuning``: a curvature-centred
    grid's ``points`` and ``factor`` (default ratio: ``DEFAULT_GRID_SHAPE``'s), else the shape of its
    ``lr_grid`` when that has two or more rates, else ``DEFAULT_GRID_SHAPE``; ``points`` overrides
    the size."""
    if tuning is not None and tuning.curvature_centred:
        size, ratio = tuning.points, tuning.factor or DEFAULT_GRID_SHAPE[1]
    elif tuning is not None and len(tuning.lr_grid) > 1:
        size, ratio = grid_shape(tuning.lr_grid)
    else:
        size, ratio = DEFAULT_GRID_SHAPE
    return points or size, ratio


def calibration_rate(selection: Path) -> float | None:
    """The tuned rate a selection file offers as calibration, None when there is none: its chosen
    rate, except for a selection made on a curvature-centred grid, whose own calibration rate is
    kept (the reference re-tuned on the grid centred on it must not move every other grid)."""
    try:
        payload = json.loads(Path(selection).read_text())
    except (OSError, ValueError):
        return None
    grid = payload.get("grid") or {}
    if grid.get("kind") == CURVATURE_CENTRED:
        chosen = (grid.get("calibration") or {}).get("reference_lr")
    else:
        chosen = payload.get("selected_lr")
    return float(chosen) if chosen else None


def suite_argument(suite: Suite) -> str:
    """How a command line names ``suite``: its name when it is the built-in of that name, else its path."""
    from initbench.spec.suite import builtin_suite_dir

    builtin = builtin_suite_dir() / f"{suite.name}.yaml"
    return suite.name if builtin.exists() and Path(suite.path).resolve() == builtin.resolve() else suite.path


def priors(
    results: Path,
    suite: Suite,
    methods: Sequence[str],
    reference: str = "lora",
    points: int | None = None,
    *,
    tasks: Sequence[str] | None = None,
    require_tuned: bool = False,
) -> list[Prior]:
    """For each method and task of ``suite`` (or of ``tasks``) with curvature measured under ``results``
    (``initbench.run.curvature_table``): the predicted rate, calibrated on ``reference``'s tuned rate
    (:func:`calibration_rate` of its selection file) or, when it was not tuned and ``require_tuned`` is
    False, the suite's default rate, and a grid of the suite's shape (:func:`grid_shape_of`) centred on
    the prediction.  A missing measurement or (``require_tuned``) selection is a ``ValueError`` naming
    the command to run."""
    from initbench.run.curvature_table import mean_lambda, read_table
    from initbench.selection.protocol import selection_path

    lambdas = mean_lambda(read_table(results), suite.spec_hash)
    size, ratio = grid_shape_of(suite.tuning, points)
    names = list(tasks) if tasks is not None else [t.name for t in suite.tasks]
    where = f"--suite {suite_argument(suite)} --out {results}"
    out = []
    for task in names:
        missing = [m for m in dict.fromkeys([reference, *methods]) if (m, task) not in lambdas]
        if missing:
            raise ValueError(
                f"lr prior: no curvature of {', '.join(map(repr, missing))} on task {task!r} under "
                f"{results}; run `initbench curvature {where} " + " ".join(f"--method {m}" for m in missing) + "` first"
            )
        ref_lr, source = suite.budget.optimizer.lr, "suite default"
        tuned = calibration_rate(selection_path(results, suite.name, reference, task, suite.spec_hash))
        if tuned is not None:
            ref_lr, source = tuned, "tuned"
        elif require_tuned:
            raise ValueError(
                f"lr prior: no tuned selection of {reference!r} on task {task!r} under {results} to "
                f"calibrate the curvature-centred grid on; tune {reference} on a fixed grid first: "
                f"`initbench evaluate --suite COPY --method {reference} --protocol tuned --out {results}`"
                f", COPY being {suite_argument(suite)} with tuning: {{lr_grid: [...]}} instead of "
                "grid: curvature-centred (the grid is not part of the spec hash, so that selection "
                "serves this suite)"
            )
        for method in methods:
            lam, ref_lam = lambdas[(method, task)], lambdas[(reference, task)]
            try:
                lr = predicted_lr(ref_lr, ref_lam, lam)
            except ValueError as err:
                raise ValueError(f"lr prior: {method} on task {task!r} (reference {reference}): {err}") from None
            out.append(Prior(method, task, lam, ref_lam, ref_lr, source, lr, centred_grid(lr, size, ratio)))
    return out
