"""Stage 1, what is asked: suites (tasks, budget, learning-rate grid), their files, the trust model, formatters.

Packages import only from earlier stages (``tests/test_layout.py``)."""
