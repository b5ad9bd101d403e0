"""Curvature-centred tuning grids on `smoke`: the suite keys, the trials at the predicted-centred
rates, the clear error before compute when an input is missing, and the edge count per grid kind."""

from __future__ import annotations

import json
import math
import re
import shutil

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import quick_smoke_suite

import initbench.run.harness as harness
import initbench.run.lending as lending
from initbench.cli import main
from initbench.method.registry import get_method
from initbench.run.curvature_table import measure_and_write
from initbench.selection.counted import read_results
from initbench.selection.protocol import ProtocolError, selection_path
from initbench.selection.status import grid_status
from initbench.selection.tuning_grid import edge_report, trial_grids
from initbench.spec.suite import SuiteError, builtin_suite_dir, load_suite
from initbench.sweeps.executors import InlineExecutor
from initbench.sweeps.sweep import run_sweep


def _with_tuning(source, path, tuning):
    spec = yaml.safe_load(source.read_text())
    spec["tuning"] = tuning
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "tuning, fragment",
    [
        ({"grid": "centred", "points": 3}, "'tuning.grid' must be one of fixed, curvature-centred"),
        ({"grid": "curvature-centred"}, "'tuning.points' is required"),
        ({"grid": "curvature-centred", "points": 1}, "'tuning.points' must be at least 2"),
        ({"grid": "curvature-centred", "points": 3, "factor": 1.0}, "'tuning.factor'"),
        ({"grid": "curvature-centred", "points": 3, "lr_grid": [0.01, 0.1]}, "'tuning.lr_grid' does not go with"),
        ({"lr_grid": [0.01, 0.1], "points": 3}, "'tuning.points' applies to grid: curvature-centred only"),
        ({"grid": "fixed", "factor": 3}, "'tuning.factor' applies to grid: curvature-centred only"),
        ({"grid": "curvature-centred", "points": "five"}, "'tuning.points' must be of type int"),
    ],
)
def test_curvature_centred_keys_are_validated(tmp_path, tuning, fragment):
    path = _with_tuning(quick_smoke_suite(tmp_path), tmp_path / "bad.yaml", tuning)
    with pytest.raises(SuiteError, match=re.escape(str(path)) + ".*" + re.escape(fragment)):
        load_suite(str(path))


def test_the_grid_kind_is_not_part_of_the_spec_hash(tmp_path, smoke_suite):
    centred = load_suite(
        str(
            _with_tuning(
                builtin_suite_dir() / "smoke.yaml",
                tmp_path / "c.yaml",
                {"grid": "curvature-centred", "points": 4, "factor": 2},
            )
        )
    )
    assert centred.tuning.curvature_centred and centred.tuning.lr_grid == []
    assert centred.spec_hash == smoke_suite.spec_hash == load_suite("smoke").spec_hash


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A one-task `smoke` (fixed grid) and its curvature-centred twin (3 rates, default factor); under
    ``out``: lora tuned on the fixed grid, and the curvature of lora and pissa."""
    folder = tmp_path_factory.mktemp("calibrated")
    fixed_path = quick_smoke_suite(folder)
    centred_path = _with_tuning(
        fixed_path, folder / "centred.yaml", {"grid": "curvature-centred", "points": 3, "seeds": [0]}
    )
    fixed, centred = load_suite(str(fixed_path)), load_suite(str(centred_path))
    out = folder / "out"
    run_sweep(fixed, [get_method("lora")], [0], out, InlineExecutor(), protocol="tuned", report=lambda _: None)
    for name in ("lora", "pissa"):
        measure_and_write(out, fixed, get_method(name), fixed.tasks[0], 0, max_iterations=5)
    return fixed, centred, out


def test_trials_run_at_the_rates_curvature_predicts(calibrated, tmp_path):
    fixed, centred, runs = calibrated
    out = tmp_path / "out"
    shutil.copytree(runs, out)
    task = fixed.tasks[0].name
    # the expected grids, from the stored measurements and lora's stored choice, not through initbench
    lam = {p.parts[-3]: pq.read_table(p).column("lambda_max")[0].as_py() for p in out.rglob("*.curvature.parquet")}
    lora_lr = json.loads(selection_path(out, "smoke", "lora", task, fixed.spec_hash).read_text())["selected_lr"]
    expected = {}
    for method in ("pissa", "lora"):
        centre = lora_lr * lam["lora"] / lam[method]
        expected[method] = [centre / 3, centre, centre * 3]  # 3 points, lr_prior's default factor 3

    run_sweep(
        centred,
        [get_method("pissa"), get_method("lora")],
        [0],
        out,
        InlineExecutor(),
        protocol="tuned",
        report=lambda _: None,
    )

    table = read_results(out)
    for method, rates in expected.items():
        rows = table.filter(pc.and_(pc.equal(table["method"], method), pc.equal(table["phase"], "trial")))
        tried = sorted(set(rows["learning_rate"].to_pylist()))
        if method == "lora":  # its fixed-grid trials stay on disk beside the centred ones
            tried = [lr for lr in tried if any(math.isclose(lr, r, rel_tol=1e-5) for r in rates)]
        assert len(tried) == 3 and all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(tried, rates)), (method, tried)
        record = json.loads(selection_path(out, "smoke", method, task, centred.spec_hash).read_text())
        assert record["grid"]["kind"] == "curvature-centred"
        assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(record["grid"]["rates"], rates))
        assert record["grid"]["calibration"]["reference_lr"] == lora_lr
        assert [t["lr"] for t in record["trials"]] == record["grid"]["rates"]
        finals = table.filter(pc.and_(pc.equal(table["method"], method), pc.equal(table["protocol"], "tuned")))
        finals = finals.filter(pc.equal(finals["phase"], "final"))
        assert set(finals["selected_lr"].to_pylist()) == {record["selected_lr"]}
    # lora re-tuned on its own centred grid keeps calibrating on its fixed-grid choice: the grids do not move
    again = trial_grids(centred, ["pissa", "lora"], [task], out)
    assert all(math.isclose(a, b, rel_tol=1e-5) for m in expected for a, b in zip(again[(m, task)].rates, expected[m]))
    plan = next(
        json.loads(p.read_text())
        for p in (out / "smoke" / "sweeps").glob("*.json")
        if (json.loads(p.read_text())["tuning"] or {}).get("grid") == "curvature-centred"
    )
    assert plan["tuning"]["points"] == 3 and plan["tuning"]["factor"] == 3.0
    assert set(plan["tuning"]["rates"]) == {"pissa", "lora"}
    assert grid_status(out).complete


def _no_compute(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a run started although an input of the grid was missing")

    monkeypatch.setattr(harness, "run_one", refuse)
    for module in (harness, lending):  # a run, and what borrows the base model outside one (curvature, --plan)
        monkeypatch.setattr(module, "base_model", refuse)


def test_missing_curvature_is_a_clear_error_before_compute(calibrated, tmp_path, monkeypatch, capsys):
    _, centred, runs = calibrated
    out = tmp_path / "out"
    shutil.copytree(runs, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    _no_compute(monkeypatch)
    with pytest.raises(
        ProtocolError,
        match=r"no curvature of 'gaussian'.*`initbench curvature --suite .* --out "
        + re.escape(str(out))
        + " --method gaussian` first",
    ):
        run_sweep(
            centred, [get_method("gaussian")], [0], out, InlineExecutor(), protocol="tuned", report=lambda _: None
        )
    for command in (["evaluate"], ["sweep", "--plan"]):
        assert (
            main([*command, "--suite", centred.path, "--method", "gaussian", "--protocol", "tuned", "--out", str(out)])
            == 2
        )
        err = capsys.readouterr().err
        assert "initbench curvature" in err and "--method gaussian" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_missing_calibration_names_the_lora_sweep(calibrated, tmp_path, monkeypatch):
    _, centred, runs = calibrated
    out = tmp_path / "out"
    for path in runs.rglob("*.curvature.parquet"):  # the curvature, not lora's tuning
        (out / path.relative_to(runs)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / path.relative_to(runs))
    _no_compute(monkeypatch)
    with pytest.raises(
        ProtocolError,
        match=r"no tuned selection of 'lora'.*`initbench evaluate --suite COPY "
        r"--method lora --protocol tuned --out .*lr_grid",
    ):
        run_sweep(centred, [get_method("pissa")], [0], out, InlineExecutor(), protocol="tuned", report=lambda _: None)
    assert not list(out.rglob("*.results.parquet")) and not (out / "smoke" / "sweeps").exists()


def _selection(out, method, chosen, grid=None, trials=(0.001, 0.01, 0.1)):
    path = selection_path(out, "smoke", method, "addition", "h")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "suite": "smoke",
        "suite_hash": "h",
        "method": method,
        "task": "addition",
        "selected_lr": chosen,
        "trials": [{"lr": lr, "scores": [0.5], "mean": 0.5} for lr in trials],
    }
    if grid is not None:
        payload["grid"] = grid
    path.write_text(json.dumps(payload))


def test_edge_count_per_grid_kind(tmp_path):
    centred = {"kind": "curvature-centred", "rates": [0.0072, 0.0216, 0.0648]}
    _selection(tmp_path, "a", 0.1, {"kind": "fixed", "rates": [0.001, 0.01, 0.1]})  # highest
    _selection(tmp_path, "b", 0.01, {"kind": "fixed", "rates": [0.001, 0.01, 0.1]})  # inside
    _selection(tmp_path, "c", 0.001, None, trials=(0.001, 0.01))  # before grids were recorded: fixed, lowest
    _selection(tmp_path, "d", 0.0072, centred)  # lowest
    _selection(tmp_path, "e", 0.0216, centred)  # inside
    _selection(tmp_path, "f", 0.01, centred)  # every trial failed: the suite's default, not a rate of the grid
    report = {row["kind"]: row for row in edge_report(tmp_path)}
    assert report["fixed"] == {
        "suite": "smoke",
        "kind": "fixed",
        "selections": 3,
        "lowest": 1,
        "highest": 1,
        "not_from_grid": 0,
    }
    assert report["curvature-centred"] == {
        "suite": "smoke",
        "kind": "curvature-centred",
        "selections": 2,
        "lowest": 1,
        "highest": 0,
        "not_from_grid": 1,
    }
