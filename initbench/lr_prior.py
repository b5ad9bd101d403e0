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

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats


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
