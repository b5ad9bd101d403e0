"""Stage 2, what a suite names: data sets and generators, models, the lm-eval tasks that score, checks before compute.

Packages import only from earlier stages (``tests/test_layout.py``)."""
