"""The data's content is part of a run's key (issue 18, finding 11): change a data file and the
finished run is redone, not skipped; a file that recorded no data hash is redone too."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from conftest import quick_smoke_suite

from initbench.method.registry import get_method
from initbench.spec.suite import load_suite
from initbench.store.results import STALE, finished_status
from initbench.sweeps.executors import InlineExecutor
from initbench.sweeps.sweep import run_sweep


def _files_suite(tmp_path, test_rows: list[dict]):
    """quick-smoke with its task's data read from two JSONL files under ``tmp_path``."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    train = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(5) for b in range(4)]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test_rows))
    (data / "validation.jsonl").write_text(json.dumps({"prompt": "4+4=", "completion": "8"}) + "\n")
    path = quick_smoke_suite(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["tasks"][0]["data"] = {
        "files": {split: str(data / f"{split}.jsonl") for split in ("train", "validation", "test")}
    }
    path.write_text(yaml.safe_dump(spec))
    return load_suite(str(path))


def _sweep(suite, out):
    lines: list[str] = []
    outcomes = run_sweep(suite, [get_method("base")], [0], out, InlineExecutor(), report=lines.append)
    return outcomes, lines


def _data_hash(outcome) -> str:
    return pq.read_table(outcome.path, columns=["data_hash"]).column("data_hash")[0].as_py()


def test_changing_a_data_file_reruns_the_run(tmp_path):
    out = tmp_path / "runs"
    suite = _files_suite(tmp_path, [{"prompt": "1+1=", "completion": "2"}, {"prompt": "2+2=", "completion": "4"}])
    (first,), _ = _sweep(suite, out)
    assert first.status == "ok", first.error
    old_hash = _data_hash(first)
    (again,), lines = _sweep(suite, out)
    assert again.status == "skipped" and any("already finished" in line for line in lines)

    suite = _files_suite(tmp_path, [{"prompt": "3+3=", "completion": "6"}, {"prompt": "2+2=", "completion": "4"}])
    (changed,), lines = _sweep(suite, out)
    assert changed.status == "ok", lines  # redone, not "skipped"
    assert any("written on other data" in line for line in lines)
    assert _data_hash(changed) != old_hash
    assert (
        finished_status(changed.path.with_name(changed.path.name.removesuffix(".results.parquet")), _data_hash(changed))
        == "ok"
    )


def test_a_finished_file_without_a_data_hash_is_stale(tmp_path):
    out = tmp_path / "runs"
    suite = _files_suite(tmp_path, [{"prompt": "1+1=", "completion": "2"}, {"prompt": "2+2=", "completion": "4"}])
    (first,), _ = _sweep(suite, out)
    table = pq.read_table(first.path)
    column = table.schema.get_field_index("data_hash")
    pq.write_table(table.set_column(column, "data_hash", pa.array([None] * table.num_rows, pa.string())), first.path)
    stem = first.path.with_name(first.path.name.removesuffix(".results.parquet"))
    assert finished_status(stem) == "ok"  # without a hash to compare: as before
    assert finished_status(stem, "0123456789abcdef") == STALE
    (again,), _ = _sweep(suite, out)
    assert again.status == "ok"


def test_relative_data_files_resolve_against_the_suite_file(tmp_path, monkeypatch):
    from initbench.inputs.data import materialize

    suite = _files_suite(tmp_path, [{"prompt": "1+1=", "completion": "2"}])
    spec = yaml.safe_load(open(suite.path).read())
    spec["tasks"][0]["data"]["files"] = {split: f"data/{split}.jsonl" for split in ("train", "validation", "test")}
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    path = tmp_path / "relative.yaml"
    path.write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(moved)  # the command runs in another folder: the paths follow the suite file
    relative = load_suite(str(path))
    data = materialize(relative.tasks[0], relative.path)
    assert data.files["test"] == (tmp_path / "data" / "test.jsonl").resolve()
    assert data.content_hash == materialize(suite.tasks[0], suite.path).content_hash
