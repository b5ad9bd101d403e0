"""Curvature measured through the harness on the smoke suite, stored and read back as a table."""

from __future__ import annotations

import math

import pyarrow.compute as pc
from conftest import quick_smoke_suite

from initbench.method.registry import get_method
from initbench.run.curvature_table import mean_lambda, measure_and_write, read_table
from initbench.spec.suite import load_suite


def test_measure_write_skip_and_read(tmp_path):
    suite = load_suite(quick_smoke_suite(tmp_path))
    task = suite.tasks[0]
    for name in ("lora", "pissa"):
        row, measured = measure_and_write(tmp_path, suite, get_method(name), task, 0, max_iterations=6)
        assert measured and row["code_hash"] and row["cpu_model"]
    again, measured = measure_and_write(tmp_path, suite, get_method("lora"), task, 0, max_iterations=6)
    assert (
        not measured
        and again["lambda_max"]
        == read_table(tmp_path).filter(pc.equal(read_table(tmp_path)["method"], "lora")).column("lambda_max")[0].as_py()
    )
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


def test_cli_curvature_then_lr_prior_predicts_from_the_measured_table(tmp_path, capsys):
    from initbench.cli import main
    from initbench.selection.lr_prior import priors

    suite_path = str(quick_smoke_suite(tmp_path))
    out = tmp_path / "runs"
    assert (
        main(
            [
                "curvature",
                "--suite",
                suite_path,
                "--method",
                "lora",
                "--method",
                "pissa",
                "--out",
                str(out),
                "--iterations",
                "5",
            ]
        )
        == 0
    )
    suite = load_suite(suite_path)
    lambdas = mean_lambda(read_table(out), suite.spec_hash)
    (prior,) = priors(out, suite, ["pissa"])
    task = suite.tasks[0].name
    expected = suite.budget.optimizer.lr * lambdas[("lora", task)] / lambdas[("pissa", task)]
    assert prior.reference_lr_source == "suite default" and math.isclose(prior.predicted_lr, expected)
    assert len(prior.grid) == len(suite.tuning.lr_grid)
    capsys.readouterr()
    assert main(["lr-prior", "--suite", suite_path, "--method", "pissa", "--results", str(out)]) == 0
    assert f"{prior.predicted_lr:.3g}" in capsys.readouterr().out
    assert main(["lr-prior", "--suite", suite_path, "--method", "gaussian", "--results", str(out)]) == 2


def test_cli_curvature_names_a_method_too_large_for_the_memory_and_goes_on(tmp_path, capsys, monkeypatch):
    from initbench.cli import main
    from initbench.run import curvature_table

    measured = []

    def fake(out, suite, method, task, seed, **options):
        if method.name == "pissa":  # as if its adapter were too large for this machine
            raise MemoryError("curvature: 500,000,000 trainable parameters: even two Lanczos iterations need ...")
        measured.append((method.name, task.name))
        row = {"lambda_max": 1.0, "iterations": 3, "converged": True, "seconds": 0.0}
        return row, True

    monkeypatch.setattr(curvature_table, "measure_and_write", fake)
    suite_path = quick_smoke_suite(tmp_path)
    args = ["curvature", "--suite", str(suite_path), "--method", "pissa", "--method", "lora"]
    assert main(args + ["--out", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    tasks = [t.name for t in load_suite(suite_path).tasks]
    assert f"pissa | {tasks[0]} | seed 0: not measured: curvature: 500,000,000 trainable parameters" in err
    assert measured == [("lora", t) for t in tasks]  # the next method is still measured, on every task


def test_cli_curvature_says_a_method_without_an_adapter_has_nothing_to_measure(tmp_path, capsys):
    from initbench.cli import main

    args = ["curvature", "--suite", str(quick_smoke_suite(tmp_path)), "--method", "full-ft", "--out", str(tmp_path)]
    assert main(args) == 1
    assert "full-ft | " in (err := capsys.readouterr().err) and "trains no adapter (nothing to measure)" in err
    assert "Traceback" not in err
