"""Stage 6, which runs count: the tuned protocol's grid and choices, the learning-rate prior, status.

Packages import only from earlier stages (``tests/test_layout.py``)."""
