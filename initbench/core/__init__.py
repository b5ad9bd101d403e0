"""Stage 0, shared by every stage: atomic writes, seeding, provenance (which code made a row), plugin entry points.

Packages import only from earlier stages (``tests/test_layout.py``)."""
