"""The typed rows are the schema: ``initbench.store.rows`` declares each column once, and the Arrow
schemas the results files are written with come from it."""

from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typing_extensions import Required, TypedDict

from initbench.store.results import CURVE_SCHEMA, CURVE_SUFFIX, RESULTS_SCHEMA, RESULTS_SUFFIX, run_stem, write_run
from initbench.store.rows import CurvePoint, ResultRow, arrow_schema

REPO = Path(__file__).resolve().parents[1]


def _written_by_the_campaign(suffix: str) -> pq.ParquetSchema:
    """The schema of a file the v0 campaign wrote (schema version 7, before the rows were typed)."""
    path = next((REPO / "campaigns" / "v0" / "mini" / "lora").rglob(f"*{suffix}"))
    schema = pq.read_schema(path)
    assert schema.metadata[b"initbench.schema_version"] == b"7"
    return schema.remove_metadata()


def test_the_typed_rows_give_the_schema_the_files_were_written_with():
    assert RESULTS_SCHEMA.equals(_written_by_the_campaign(RESULTS_SUFFIX))
    assert CURVE_SCHEMA.equals(_written_by_the_campaign(CURVE_SUFFIX))
    assert [f.name for f in RESULTS_SCHEMA if not f.nullable] == sorted(
        ResultRow.__required_keys__, key=RESULTS_SCHEMA.names.index
    )
    assert set(CurvePoint.__required_keys__) == {f.name for f in CURVE_SCHEMA if not f.nullable}


def test_a_never_null_column_left_out_is_refused_before_anything_is_written(tmp_path):
    stem = run_stem(tmp_path, "s", "m", "t", 0, "h")
    row: ResultRow = {"run_id": "s/m/t/seed0/h", "suite": "s", "suite_hash": "h", "method": "m", "task": "t", "seed": 0}
    with pytest.raises(ValueError, match="'config_hash', 'status'"):
        write_run(stem, [row], [])
    with pytest.raises(ValueError, match="curve point has no value for 'step'"):
        write_run(stem, [{**row, "config_hash": "c", "status": "ok"}], [{**row, "loss": 1.0}])
    assert not list(tmp_path.rglob("*.parquet"))


def test_a_row_class_maps_to_arrow_types_and_refuses_what_it_cannot():
    class Fine(TypedDict, total=False):
        key: Required[str]
        when: datetime | None
        count: int | None
        flag: bool | None

    schema = arrow_schema(Fine)
    assert [(f.name, str(f.type), f.nullable) for f in schema] == [
        ("key", "string", False),
        ("when", "timestamp[ms, tz=UTC]", True),
        ("count", "int64", True),
        ("flag", "bool", True),
    ]

    class Unsupported(TypedDict, total=False):
        blob: bytes | None

    with pytest.raises(TypeError, match="Unsupported.blob"):
        arrow_schema(Unsupported)

    class NeverNullButOptional(TypedDict, total=False):
        name: str

    with pytest.raises(TypeError, match="must be Required"):
        arrow_schema(NeverNullButOptional)
