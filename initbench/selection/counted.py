"""Which results count: a results folder read as the leaderboard reads it, and a protocol's final rows.

:func:`read_results` reads every results (or curve) file under a folder once per run
(``initbench.store.results.read_tree``) and sets aside the tuned finals a later selection superseded
(``initbench.selection.protocol.superseded``: kept on disk, not counted).  :func:`final_rows` keeps the rows a
protocol scores on test, :func:`has_tuned` says whether a table has any tuned run.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from initbench.selection.protocol import superseded
from initbench.store.results import CURVE_SCHEMA, RESULTS_SCHEMA, RESULTS_SUFFIX, read_tree, without_runs


def read_results(path: Path, suffix: str = RESULTS_SUFFIX, *, set_aside: bool = True) -> pa.Table:
    """Concatenate every results (or curve) file under ``path`` into one table: one run key, one
    file (a run in two files is a ``ResultsError`` naming both); unless ``set_aside`` is False,
    tuned finals superseded by a later selection are left out."""
    schema = RESULTS_SCHEMA if suffix == RESULTS_SUFFIX else CURVE_SCHEMA
    tables = read_tree(path, suffix)
    if not tables:
        return schema.empty_table()
    table = pa.concat_tables(tables.values())
    if set_aside and Path(path).is_dir():
        table = without_runs(table, superseded(path))
    return table


def final_rows(table: pa.Table, protocol: str) -> pa.Table:
    """The rows scored on test under ``protocol``.  For ``tuned``, methods that do not train
    (no learning rate: ``base``) count with their fixed runs, since there is nothing to tune."""
    final = pc.equal(table["phase"], "final")
    if protocol == "fixed":
        return rows_where(table, pc.and_(final, pc.equal(table["protocol"], "fixed")))
    untrained = pc.and_(pc.equal(table["protocol"], "fixed"), pc.is_null(table["learning_rate"]))
    return rows_where(table, pc.and_(final, pc.or_(pc.equal(table["protocol"], "tuned"), untrained)))


def rows_where(table: pa.Table, mask: pa.ChunkedArray | pa.Array) -> pa.Table:
    """``table.filter(mask)``, without copying the table when the mask keeps every row."""
    return table if pc.all(mask, skip_nulls=False).as_py() is True else table.filter(mask)


def has_tuned(table: pa.Table) -> bool:
    """Whether ``table`` holds any run of the tuned protocol."""
    return table.num_rows > 0 and pc.any(pc.equal(table["protocol"], "tuned")).as_py() is True
