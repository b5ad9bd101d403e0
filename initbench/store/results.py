"""Results schema and I/O: one Parquet file per run, written atomically.

A run (suite, method, task, seed, spec hash) writes two files side by side:
``<seed>.curve.parquet`` (the training-loss curve) then ``<seed>.results.parquet``
(one row per metric).  The results file is written last, via a temporary file
and ``os.replace``, so its presence means the run finished; an interrupted
sweep loses only the run in flight.  Each file carries the schema version in
its Arrow metadata.

Schema version 2 adds the protocol columns: ``protocol`` (``fixed``: the suite's
learning rate; ``tuned``: see ``initbench.selection.protocol``), ``phase`` (``trial``: a tuning
run scored on the validation split; ``final``: a run scored on test), ``eval_split``
and ``selected_lr`` (the rate a tuned final run was chosen to use).  Version-1 files
still validate and read, with ``fixed``/``final``/``test``/null filled in.

Schema version 3 adds the optional diagnostics columns (``initbench.run.diagnostics``, switched on
with ``INITBENCH_DIAGNOSTICS=1``): ``init_update_erank`` and ``final_update_erank`` (mean over
layers of the entropy effective rank of ``scale * B [M] A`` after init and after training) and
``relative_weight_change`` (mean over layers of ``||W_final - W0||_F / ||W0||_F``).  They are null
when the diagnostics are off and in version-1 and version-2 files, which still validate and read.

Schema version 4 adds the throughput columns of the training phase (``initbench.run.throughput``):
``train_flops`` (model FLOPs of the optimizer steps alone), ``train_tokens_per_second``,
``device_peak_flops`` (the device's dense bf16 peak, null where unknown, e.g. on CPU) and ``mfu``
(``train_flops / train_seconds / device_peak_flops``).  Null in older files.

Reading a results folder (:func:`read_tree`) counts each run id once: a run in two files is a
``ResultsError`` naming both, and so is a file that is empty, not Parquet, or not an initbench file
of its kind (:func:`read_file`); ``initbench.selection.counted.read_results`` concatenates them and leaves out
tuned finals superseded by a later selection (``initbench.selection.protocol.superseded``).

Schema version 5 adds ``execution`` (JSON: the loss path, fused AdamW, autocast;
``initbench.run.execution.execution_settings``), null in older files.

Schema version 6 adds ``method_info`` (issue 14, item 7): a JSON object of facts the init method
and the harness recorded during ``initialize`` (``InitContext.info``), e.g.
``{"calibration_reference_examples": 50, "calibration_granted_examples": 32, "eva_converged": false}``;
and ``primary_metric`` (issue 18, finding 12: the metric key the task's aggregates and tuning use,
``initbench.inputs.evaluation.task_primary_metric``).  Both are null in older files, where the leaderboard
falls back to the lm-eval task's default primary metric.

Schema version 6 also adds, for issue 13 (items 1 and 2), the code identity of a row
(``initbench.core.provenance``): ``code_commit`` and ``code_dirty`` (git; null outside a checkout),
``code_hash`` (the installed sources), ``torch_threads``, ``cpu_model``, ``cpu_flags`` (the
kernel-choosing instruction sets) and ``cpu_capability`` (torch's), and ``init_reused`` (the
initialization was loaded from an earlier learning-rate trial of the same method, task and seed,
``initbench.run.init_cache``), and ``forgetting_kl`` with ``forgetting_set`` (issue 13, item 6,
``initbench.run.forgetting``: the mean per-token KL divergence of the trained model's next-token
distribution from the untouched base model's on a held set of general text, final runs of methods
that train).  Null in older files.

Schema version 7 adds ``train_reused``: the run's trained adapters, training curve and training
outputs (``train_seconds``, throughput) were loaded from an earlier run that trained the identical
model (same method, task, seed, training data, learning rate and execution settings; a tuning trial
and the final at its rate and seed, ``initbench.run.train_cache``).  Null in older files.
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from initbench.core import atomic
from initbench.store.rows import CurvePoint, ResultRow, arrow_schema

SCHEMA_VERSION = "7"
SUPPORTED_VERSIONS = ("1", "2", "3", "4", "5", "6", "7")
RESULTS_SUFFIX = ".results.parquet"
CURVE_SUFFIX = ".curve.parquet"

#: one row per metric of a run; the columns, their types and which may be null: ``initbench.store.rows``
RESULTS_SCHEMA = arrow_schema(ResultRow)
#: columns added in schema version 2, and what a version-1 row means for each
V2_DEFAULTS = {"protocol": "fixed", "phase": "final", "eval_split": "test", "selected_lr": None}
#: columns added in schema version 3 (diagnostics), null in older files
V3_DEFAULTS = {"init_update_erank": None, "final_update_erank": None, "relative_weight_change": None}
#: columns added in schema version 4 (throughput), null in older files
V4_DEFAULTS = {"train_flops": None, "train_tokens_per_second": None, "device_peak_flops": None, "mfu": None}
#: columns added in schema version 5, null in older files
V5_DEFAULTS = {"execution": None}
#: columns added in schema version 6, null in older files: method_info (issue 14), primary_metric (issue 18),
#: code identity, init reuse and forgetting (issue 13)
V6_DEFAULTS = {
    "method_info": None,
    "primary_metric": None,
    "code_commit": None,
    "code_dirty": None,
    "code_hash": None,
    "torch_threads": None,
    "cpu_model": None,
    "cpu_flags": None,
    "cpu_capability": None,
    "init_reused": None,
    "forgetting_kl": None,
    "forgetting_set": None,
}
#: columns added in schema version 7 (training reuse), null in older files
V7_DEFAULTS = {"train_reused": None}
#: the columns each schema version added, for reading and validating older files
ADDED_IN = {"2": V2_DEFAULTS, "3": V3_DEFAULTS, "4": V4_DEFAULTS, "5": V5_DEFAULTS, "6": V6_DEFAULTS, "7": V7_DEFAULTS}

#: one point per logged training step of a run
CURVE_SCHEMA = arrow_schema(CurvePoint)


class ResultsError(ValueError):
    """A results file does not match the schema, cannot be read, or repeats another's run."""


def _kind_of(schema: pa.Schema) -> str:
    return "results" if schema is RESULTS_SCHEMA else "curve"


def run_stem(
    out: Path,
    suite: str,
    method: str,
    task: str,
    seed: int,
    suite_hash: str,
    *,
    lr: float | None = None,
    split: str = "test",
) -> Path:
    """The path (without suffix) of one run's files under ``out``.  A run at the suite's own
    learning rate scored on test keeps the version-1 name ``seed<S>-<hash>``; any other
    (a tuning trial, a tuned final) gets ``seed<S>-lr<lr>-<split>-<hash>``, one file each."""
    name = (
        f"seed{seed}-{suite_hash}"
        if lr is None and split == "test"
        else f"seed{seed}-lr{format_lr(lr)}-{split}-{suite_hash}"
    )
    return Path(out) / suite / method / task / name


def format_lr(lr: float | None) -> str:
    """A learning rate as it appears in file names and run ids (shortest exact repr)."""
    return "default" if lr is None else repr(float(lr))


def write_run(stem: Path, rows: list[ResultRow], curve: list[CurvePoint]) -> Path:
    """Write a run's curve, then its results, each atomically; returns the results path.

    A key that is not a column of the schema (a misspelled one), or a never-null column left out or
    None, raises ``ValueError`` before anything is written: Arrow would silently drop the one and
    leave its column null, and write the other's null into a column declared never null."""
    _check_columns(rows, RESULTS_SCHEMA, "results row")
    _check_columns(curve, CURVE_SCHEMA, "curve point")
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(pa.Table.from_pylist(curve, schema=CURVE_SCHEMA), stem.with_name(stem.name + CURVE_SUFFIX), "curve")
    results_path = stem.with_name(stem.name + RESULTS_SUFFIX)
    rows = [{**row, **{k: v for k, v in V2_DEFAULTS.items() if v is not None and row.get(k) is None}} for row in rows]
    write_atomic(pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA), results_path, "results")
    return results_path


def _check_columns(rows: list[ResultRow] | list[CurvePoint], schema: pa.Schema, kind: str) -> None:
    unknown = sorted({k for row in rows for k in row} - set(schema.names))
    if unknown:
        raise ValueError(
            f"{kind} has key(s) {', '.join(map(repr, unknown))} that the schema (version "
            f"{SCHEMA_VERSION}) has no column for: a misspelling, or a column to add to the schema"
        )
    required = [f.name for f in schema if not f.nullable]
    missing = sorted({k for row in rows for k in required if row.get(k) is None})
    if missing:  # Arrow would write the null anyway, into a column declared never null
        raise ValueError(f"{kind} has no value for {', '.join(map(repr, missing))}, which the schema never leaves null")


def write_atomic(table: pa.Table, path: Path, kind: str, metadata: dict[str, str] | None = None) -> None:
    """Write ``table`` as a ``kind`` (results, curve, samples) file with the schema version, atomically;
    ``metadata`` adds to (or overrides) the file's ``initbench.*`` metadata."""
    table = table.replace_schema_metadata(
        {"initbench.schema_version": SCHEMA_VERSION, "initbench.table": kind, **(metadata or {})}
    )
    try:
        with atomic.replacing(path) as tmp:  # a full disk, a kill: no partial file, the old one kept
            pq.write_table(table, tmp)
            _check_written(tmp, table.num_rows, path)
    except OSError as err:
        if err.errno and not err.filename:  # Arrow's errors name no file
            raise OSError(err.errno, os.strerror(err.errno), str(path)) from err
        raise


def _check_written(tmp: Path, rows: int, path: Path) -> None:
    """The file just written reads back with all its rows (a full disk can cut a write short silently)."""
    try:
        complete = pq.read_metadata(tmp).num_rows == rows
    except (pa.ArrowInvalid, OSError):
        complete = False
    if not complete:
        raise OSError(errno.EIO, "the file written is incomplete", str(path))


STALE = "stale"
#: the statuses of a finished run (a failed one is redone)
DONE = ("ok", "diverged")


def finished_status(stem: Path, data_hash: str | None = None) -> str | None:
    """The status of a finished run at ``stem`` (``ok``, ``diverged``, ``failed``), or None if it must
    be (re)done: no results file, or a results or curve file that cannot be read (empty after a
    crash or a full disk, truncated), so a resumed sweep repairs it.

    With ``data_hash`` (the content hash of the data the run would read now) the data is part of
    the run's key: a file written on other data, or one that recorded no data hash, is ``STALE``
    (not finished, so a sweep redoes it and the new file replaces it)."""
    path = stem.with_name(stem.name + RESULTS_SUFFIX)
    curve = stem.with_name(stem.name + CURVE_SUFFIX)
    if not path.exists():
        return None
    try:
        table = pq.read_table(path, columns=["status", "data_hash"] if data_hash is not None else ["status"])
        pq.read_metadata(curve)
    except (pa.ArrowInvalid, OSError, KeyError):
        return None  # unreadable or missing: treat as not done so the run is redone
    if table.num_rows == 0:
        return None
    status = table.column("status")[0].as_py()
    if data_hash is not None and status != "failed" and table.column("data_hash")[0].as_py() != data_hash:
        return STALE
    return status


def read_rows(path: Path, columns: list[str]) -> list[dict[str, Any]] | None:
    """A quick read of some columns of one results file, as row dicts; None when the file is missing,
    unreadable or lacks a column (callers treat that run as not finished).  For whole, validated
    tables use :func:`read_file` / ``initbench.selection.counted.read_results``."""
    try:
        return pq.read_table(path, columns=columns).to_pylist()
    except (pa.ArrowInvalid, OSError, KeyError):
        return None


def result_files(path: Path, suffix: str = RESULTS_SUFFIX) -> list[Path]:
    path = Path(path)
    return [path] if path.is_file() else sorted(path.rglob(f"*{suffix}"))


def read_file(path: Path, schema: pa.Schema = RESULTS_SCHEMA) -> pa.Table:
    """One results (or curve) file, upgraded to the current schema; a ``ResultsError`` naming the
    file and the fix when it is empty, not Parquet, or not an initbench file of that kind."""
    path = Path(path)
    fix = "rerun the same sweep to redo that run (or delete the file)"
    if path.stat().st_size == 0:
        raise ResultsError(f"{path}: empty file (0 bytes, a crash or a full disk while writing); {fix}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise ResultsError(f"{path}: not a readable Parquet file ({first_line(err)}); {fix}") from None
    problems = table_problems(path, table)
    if not problems and (table.schema.metadata or {}).get(b"initbench.table") != _kind_of(schema).encode():
        problems = [f"{path}: a {_kind(table) or 'foreign'} file where a {_kind_of(schema)} file was expected"]
    if problems:
        more = (
            f" (and {len(problems) - 1} more problem(s); `initbench validate` lists them)" if len(problems) > 1 else ""
        )
        raise ResultsError(f"{problems[0]}{more}; {fix}")
    return upgrade(table, schema)


def first_line(err: BaseException) -> str:
    """An error's first non-blank line (at most 300 characters), or its type's name: for one-line messages."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(err).__name__


def without_runs(table: pa.Table, run_ids) -> pa.Table:
    """``table`` less the rows of the runs ``run_ids`` (set aside)."""
    run_ids = sorted(run_ids)
    if not run_ids:
        return table
    return table.filter(pc.invert(pc.is_in(table["run_id"], pa.array(run_ids, pa.string()))))


def read_tree(path: Path, suffix: str = RESULTS_SUFFIX) -> dict[Path, pa.Table]:
    """Every results (or curve) file at or under ``path``, read with :func:`read_file`, by path;
    a run id found in two files is a ``ResultsError`` naming both (a copy in a subfolder, a
    results tree merged twice): the leaderboard must count each run once."""
    schema = RESULTS_SCHEMA if suffix == RESULTS_SUFFIX else CURVE_SCHEMA
    tables: dict[Path, pa.Table] = {}
    owner: dict[str, Path] = {}
    for f in result_files(path, suffix):
        table = read_file(f, schema)
        for run_id in pc.unique(table["run_id"]).to_pylist():
            if run_id in owner:
                raise ResultsError(
                    f"run {run_id} is in two files: {owner[run_id]} and {f}; one run must have one "
                    "result: delete the copy"
                )
            owner[run_id] = f
        tables[f] = table
    return tables


def upgrade(table: pa.Table, schema: pa.Schema = RESULTS_SCHEMA) -> pa.Table:
    """Cast a results (or curve) table to the current schema; version-1 results get the
    version-2 columns with their version-1 meaning (``V2_DEFAULTS``), older results the later
    columns as nulls (``V3_DEFAULTS`` and later)."""
    if schema is RESULTS_SCHEMA:
        for name, default in {k: v for added in ADDED_IN.values() for k, v in added.items()}.items():
            if name not in table.schema.names:
                field = schema.field(name)
                table = table.append_column(field, pa.array([default] * table.num_rows, type=field.type))
    return table.select(schema.names).cast(schema)


def validate_file(path: Path) -> list[str]:
    """Problems with one results or curve file (empty list: valid)."""
    try:
        table = pq.read_table(path)
    except Exception as err:
        return [
            f"{path}: unreadable: {first_line(err)}" if Path(path).stat().st_size else f"{path}: empty file (0 bytes)"
        ]
    return table_problems(path, table)


def _kind(table: pa.Table) -> str:
    return (table.schema.metadata or {}).get(b"initbench.table", b"").decode()


def table_problems(path: Path, table: pa.Table) -> list[str]:
    """Problems with the table read from ``path`` against the schema its metadata names."""
    metadata = table.schema.metadata or {}
    kind = _kind(table)
    version = metadata.get(b"initbench.schema_version", b"").decode()
    problems = []
    if version not in SUPPORTED_VERSIONS:
        problems.append(
            f"{path}: schema version {version or 'missing'}, expected one of {', '.join(SUPPORTED_VERSIONS)}"
        )
    expected = {"results": RESULTS_SCHEMA, "curve": CURVE_SCHEMA}.get(kind)
    if expected is None:
        return problems + [f"{path}: metadata 'initbench.table' is {kind or 'missing'}, expected results or curve"]
    number = int(version) if version.isdigit() else 0
    later = {name for added_in, added in ADDED_IN.items() if int(added_in) > number for name in added}
    for field in expected:
        if field.name in later:
            continue  # added after this file's version
        if field.name not in table.schema.names:
            problems.append(f"{path}: missing column {field.name!r}")
        elif not table.schema.field(field.name).type.equals(field.type):
            problems.append(
                f"{path}: column {field.name!r} is {table.schema.field(field.name).type}, expected {field.type}"
            )
        elif not field.nullable and table.column(field.name).null_count:
            problems.append(f"{path}: column {field.name!r} has nulls")
    if kind == "results" and "status" in table.schema.names:
        bad = set(table.column("status").to_pylist()) - {"ok", "diverged", "failed"}
        if bad:
            problems.append(f"{path}: column 'status' has unknown values {sorted(bad)}")
        if {"metric", "value"} <= set(table.schema.names):
            problems += _value_problems(path, table.select(["status", "metric", "value"]).to_pylist())
    if kind == "results" and number >= 2:
        for column, allowed in (("protocol", {"fixed", "tuned"}), ("phase", {"trial", "final"})):
            if column in table.schema.names:
                bad = set(table.column(column).to_pylist()) - allowed
                if bad:
                    problems.append(f"{path}: column {column!r} has unknown values {sorted(bad, key=str)}")
    return problems


#: metrics that are fractions (lm-eval's mean-aggregated accuracies and matches): values in [0, 1]
FRACTION_METRICS = ("acc", "acc_norm", "exact_match", "em", "f1", "mc1", "mc2")


def metric_range(metric: str) -> tuple[float, float]:
    """The closed range a metric's value lies in (fractions: [0, 1]; others: any finite value)."""
    return (0.0, 1.0) if metric.partition(",")[0] in FRACTION_METRICS else (-math.inf, math.inf)


def _value_problems(path: Path, rows: list[dict[str, Any]]) -> list[str]:
    """A finished (ok) row's value is a finite number in its metric's range."""
    nonfinite, outside = set(), set()
    for r in rows:
        if r["status"] != "ok" or r["metric"] is None:
            continue
        value = r["value"]
        if not isinstance(value, float) or not math.isfinite(value):
            nonfinite.add(f"{r['metric']}={value!r}")
        elif not metric_range(r["metric"])[0] <= value <= metric_range(r["metric"])[1]:
            outside.add(f"{r['metric']}={value!r}")
    problems = []
    if nonfinite:
        problems.append(f"{path}: status ok with a value that is not a finite number ({', '.join(sorted(nonfinite))})")
    if outside:
        problems.append(
            f"{path}: status ok with a value outside its metric's range [0, 1] ({', '.join(sorted(outside))})"
        )
    return problems


def validate(path: Path) -> list[str]:
    """Problems with every results and curve file at or under ``path``, and runs found in two files."""
    files = result_files(path) + result_files(path, CURVE_SUFFIX) if Path(path).is_dir() else [Path(path)]
    if not files:
        return [f"{path}: no results files found"]
    problems = [problem for f in files for problem in validate_file(f)]
    if not problems:
        for suffix in (RESULTS_SUFFIX, CURVE_SUFFIX):
            try:
                read_tree(path, suffix)
            except ResultsError as err:  # a run in two files
                problems.append(str(err))
    return problems
