"""A learning-rate prior from curvature at init (``initbench.curvature``).

"Learning Rate Matters" (arXiv 2602.04998) finds a method's best rate close to inversely proportional
to ``lambda_max`` of the loss Hessian at init.  Calibrated on a reference method whose tuned rate is
known (``lora`` on the same suite and task), the prior for method M is

    lr_M = lr_ref * lambda_ref / lambda_M

and a curvature-centred grid is the suite's grid shape (same number of points, same neighbour ratio)
moved so that its centre is ``lr_M``: the same tuning allowance for every method.  ``fit`` measures
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

if TYPE_CHECKING:  # pragma: no cover
    from initbench.suite import Suite


def predicted_lr(lr_reference: float, lambda_reference: float, lambda_method: float) -> float:
    """The rate curvature predicts for a method: ``lr_ref * lambda_ref / lambda_method``."""
    for name, value in (("lr_reference", lr_reference), ("lambda_reference", lambda_reference),
                        ("lambda_method", lambda_method)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"lr prior: {name} must be a positive finite number, got {value}")
    return lr_reference * lambda_reference / lambda_method


def centred_grid(centre: float, points: int, ratio: float) -> list[float]:
    """``points`` log-spaced rates with neighbour ratio ``ratio`` whose geometric centre is ``centre``
    (an odd count contains ``centre`` itself)."""
    if points < 1 or ratio <= 1 or centre <= 0:
        raise ValueError(f"centred grid: need points >= 1, ratio > 1, centre > 0; got {points}, {ratio}, {centre}")
    offsets = [i - (points - 1) / 2 for i in range(points)]
    return [float(f"{centre * ratio ** k:.6g}") for k in offsets]


def grid_shape(grid: Sequence[float]) -> tuple[int, float]:
    """(number of points, geometric-mean neighbour ratio) of an ascending log-spaced grid."""
    if len(grid) < 2:
        raise ValueError("a grid shape needs at least two rates")
    return len(grid), (grid[-1] / grid[0]) ** (1 / (len(grid) - 1))


def on_edge(chosen: float, grid: Sequence[float]) -> bool:
    """Whether the chosen rate is the smallest or the largest of its grid (the optimum may lie outside)."""
    return math.isclose(chosen, min(grid), rel_tol=1e-9) or math.isclose(chosen, max(grid), rel_tol=1e-9)


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


def priors(results: Path, suite: Suite, methods: Sequence[str], reference: str = "lora",
           points: int | None = None) -> list[Prior]:
    """For each method and task of ``suite`` with curvature measured under ``results``
    (``initbench.curvature_table``): the predicted rate, calibrated on ``reference``'s tuned rate (its
    selection file) or, when it was not tuned, the suite's default rate, and a grid of the suite's
    tuning-grid shape (``points`` overrides its size; a suite without a grid of two or more rates gets
    ``DEFAULT_GRID_SHAPE``) centred on the prediction."""
    from initbench.curvature_table import mean_lambda, read_table
    from initbench.protocol import selection_path

    lambdas = mean_lambda(read_table(results), suite.spec_hash)
    grid = list(suite.tuning.lr_grid) if suite.tuning and len(suite.tuning.lr_grid) > 1 else []
    size, ratio = grid_shape(grid) if grid else DEFAULT_GRID_SHAPE
    size = points or size
    out = []
    for task in suite.tasks:
        if (reference, task.name) not in lambdas:
            raise ValueError(f"lr prior: no curvature of the reference {reference!r} on task {task.name!r} under "
                             f"{results}; run `initbench curvature --suite {suite.name} --method {reference}` first")
        ref_lr, source = suite.budget.optimizer.lr, "suite default"
        selection = selection_path(results, suite.name, reference, task.name, suite.spec_hash)
        if selection.exists():
            chosen = json.loads(selection.read_text()).get("selected_lr")
            if chosen:
                ref_lr, source = float(chosen), "tuned"
        for method in methods:
            if (method, task.name) not in lambdas:
                raise ValueError(f"lr prior: no curvature of {method!r} on task {task.name!r} under {results}; "
                                 f"run `initbench curvature --suite {suite.name} --method {method}` first")
            lam, ref_lam = lambdas[(method, task.name)], lambdas[(reference, task.name)]
            lr = predicted_lr(ref_lr, ref_lam, lam)
            out.append(Prior(method, task.name, lam, ref_lam, ref_lr, source, lr, centred_grid(lr, size, ratio)))
    return out
