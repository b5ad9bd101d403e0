"""Stage 5, one run: lend the model, attach and initialize, train within the budget, evaluate, record the row.

Packages import only from earlier stages (``tests/test_layout.py``)."""
