"""Results files: schema-valid, atomic, and a killed sweep resumes without loss or duplicates."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from initbench.selection.counted import read_results
from initbench.store.results import (
    RESULTS_SCHEMA,
    finished_status,
    result_files,
    run_stem,
    validate,
    write_run,
)


def _row(**over):
    row = {f.name: None for f in RESULTS_SCHEMA}
    row.update(
        run_id="s/m/t/seed0/h",
        suite="s",
        suite_hash="h",
        method="m",
        task="t",
        seed=0,
        config_hash="c",
        status="ok",
        metric="acc",
        value=0.5,
    )
    row.update(over)
    return row


def test_written_files_validate_and_carry_the_schema_version(tmp_path):
    stem = run_stem(tmp_path, "s", "m", "t", 0, "h")
    path = write_run(
        stem,
        [_row()],
        [
            {
                "run_id": "x",
                "suite": "s",
                "suite_hash": "h",
                "method": "m",
                "task": "t",
                "seed": 0,
                "step": 1,
                "loss": 1.0,
                "lr": 0.1,
                "tokens": 3,
            }
        ],
    )
    assert validate(tmp_path) == []
    assert pq.read_schema(path).metadata[b"initbench.schema_version"] == b"7"
    assert finished_status(stem) == "ok"
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_validate_names_file_and_problem(tmp_path):
    good = write_run(run_stem(tmp_path, "s", "m", "t", 0, "h"), [_row()], [])
    table = pq.read_table(good)
    pq.write_table(table.drop_columns(["seed"]).replace_schema_metadata(table.schema.metadata), good)
    problems = validate(good)
    assert problems == [f"{good}: missing column 'seed'"]
    bad_status = write_run(run_stem(tmp_path, "s", "m", "t", 1, "h"), [_row(seed=1, status="great")], [])
    assert any("unknown values ['great']" in p for p in validate(bad_status))
    foreign = tmp_path / "foreign.results.parquet"
    pq.write_table(pa.table({"a": [1]}), foreign)
    assert any("schema version missing" in p for p in validate(foreign))


def test_a_crash_between_temp_and_rename_leaves_no_result(tmp_path, monkeypatch):
    import initbench.store.results as results

    stem = run_stem(tmp_path, "s", "m", "t", 0, "h")

    def crash(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(results.os, "replace", crash)
    try:
        write_run(stem, [_row()], [])
    except KeyboardInterrupt:
        pass
    assert finished_status(stem) is None and result_files(tmp_path) == []


@pytest.mark.slow
def test_killed_sweep_resumes_without_loss_or_duplicates(tmp_path):
    out = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "initbench.cli",
        "evaluate",
        "--suite",
        "smoke",
        "--method",
        "lora",
        "--method",
        "base",
        "--seeds",
        "0,1",
        "--out",
        str(out),
    ]
    sweep = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not result_files(out) and time.time() < deadline and sweep.poll() is None:
        time.sleep(0.2)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    survivors = {p: p.stat().st_mtime_ns for p in result_files(out)}
    assert survivors, "the sweep was killed before any run finished"
    assert len(survivors) < 8
    assert validate(out) == []  # no half-written file is visible

    subprocess.run(command, check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    table = read_results(out)
    keys = list(zip(table["method"].to_pylist(), table["task"].to_pylist(), table["seed"].to_pylist()))
    assert len(set(keys)) == 8 == len(keys)  # 2 methods x 2 tasks x 2 seeds, one metric each
    assert all(p.stat().st_mtime_ns == t for p, t in survivors.items())  # finished runs were not redone
    assert set(table["status"].to_pylist()) == {"ok"}


def test_archived_runs_of_older_schema_versions_still_validate_and_read():
    """The Parquet files under benchmarks/results were written by earlier schema versions (1 to 4)."""
    from conftest import REPO

    from initbench.selection.counted import read_results
    from initbench.store.results import ADDED_IN

    archive = REPO / "benchmarks" / "results" / "2026-11-23-cpu"
    versions = {pq.read_schema(p).metadata[b"initbench.schema_version"] for p in archive.rglob("*.results.parquet")}
    assert versions & {b"1", b"2", b"3", b"4"}, versions
    assert validate(archive) == []
    table = read_results(archive)
    assert table.num_rows > 0 and all(name in table.schema.names for added in ADDED_IN.values() for name in added)


def test_a_misspelled_column_is_refused_before_anything_is_written(tmp_path):
    import pytest

    stem = run_stem(tmp_path, "s", "m", "t", 0, "h")
    with pytest.raises(ValueError, match="'wall_secs'"):
        write_run(stem, [_row(wall_secs=3.0)], [])
    with pytest.raises(ValueError, match="curve point has key.*'los'"):
        write_run(stem, [_row()], [{"run_id": "x", "step": 1, "los": 1.0}])
    assert not list(tmp_path.rglob("*.parquet"))
