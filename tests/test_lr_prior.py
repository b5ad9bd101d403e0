"""The learning-rate prior from curvature: prediction, centred grids, and the fit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from initbench.selection.lr_prior import centred_grid, fit, grid_shape, on_edge, predicted_lr


def test_prediction_is_inverse_to_curvature():
    # the paper's OLoRA case: ~18x lora's curvature -> ~18x lower rate
    assert math.isclose(predicted_lr(2e-3, 1.0, 18.2), 2e-3 / 18.2)
    with pytest.raises(ValueError, match="lambda_method"):
        predicted_lr(2e-3, 1.0, -3.0)


def test_centred_grid_keeps_the_suite_grid_shape():
    points, ratio = grid_shape([6.7e-5, 2e-4, 6e-4, 2e-3, 6e-3])
    assert points == 5 and 2.9 < ratio < 3.1
    grid = centred_grid(1e-4, points, ratio)
    assert len(grid) == 5 and math.isclose(grid[2], 1e-4)
    assert math.isclose(math.sqrt(grid[0] * grid[-1]), 1e-4, rel_tol=1e-5)
    even = centred_grid(1e-3, 4, 2.0)
    assert math.isclose(math.sqrt(even[1] * even[2]), 1e-3, rel_tol=1e-5) and 1e-3 not in even
    assert on_edge(grid[0], grid) and on_edge(grid[-1], grid) and not on_edge(grid[2], grid)


def test_fit_recovers_an_exact_inverse_law_and_reports_noise():
    lambdas = [1.0, 3.0, 10.0, 30.0, 100.0]
    exact = fit(lambdas, [2e-3 / lam for lam in lambdas])
    assert math.isclose(exact.slope, 1.0) and math.isclose(exact.r_squared, 1.0)
    rng = np.random.default_rng(0)
    lambdas = list(np.exp(rng.uniform(0, 5, 40)))
    noisy = fit(lambdas, [2e-3 / lam * math.exp(rng.normal(0, 1.5)) for lam in lambdas])
    assert 0 < noisy.r_ci[0] < noisy.pearson_r < noisy.r_ci[1] < 1
    unrelated = fit(lambdas, list(np.exp(rng.normal(-6, 1, 40))))
    assert unrelated.r_ci[0] < 0 < unrelated.r_ci[1]
