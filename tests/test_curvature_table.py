"""Curvature measured through the harness on the smoke suite, stored and read back as a table."""

from __future__ import annotations

import math

from conftest import quick_smoke_suite
from initbench.curvature_table import measure_and_write, mean_lambda, read_table
from initbench.registry import get_method
from initbench.suite import load_suite


def test_measure_write_skip_and_read(tmp_path):
    suite = load_suite(quick_smoke_suite(tmp_path))
    task = suite.tasks[0]
    for name in ("lora", "pissa"):
        path, measured = measure_and_write(tmp_path, suite, get_method(name), task, 0, max_iterations=6)
        assert measured and path.exists()
    path, measured = measure_and_write(tmp_path, suite, get_method("lora"), task, 0, max_iterations=6)
    assert not measured
    table = read_table(tmp_path)
    assert table.num_rows == 2
    lambdas = mean_lambda(table, suite.spec_hash)
    assert set(lambdas) == {("lora", task.name), ("pissa", task.name)}
    assert all(math.isfinite(v) for v in lambdas.values())
    row = table.to_pylist()[0]
    assert row["hvps"] == row["iterations"] and row["forward_passes"] == row["hvps"] * row["batches"]


def test_same_seed_same_value(tmp_path):
    suite = load_suite(quick_smoke_suite(tmp_path))
    values = []
    for folder in ("a", "b"):
        measure_and_write(tmp_path / folder, suite, get_method("lora"), suite.tasks[0], 1, max_iterations=5)
        values.append(read_table(tmp_path / folder).column("lambda_max")[0].as_py())
    assert values[0] == values[1]
