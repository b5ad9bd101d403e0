"""Stage 4, where results are written and read: the Arrow schema, per-run Parquet files, samples, claims.

Packages import only from earlier stages (``tests/test_layout.py``)."""
