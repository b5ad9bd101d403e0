"""Stage 7, many runs: sweeps, executors (local, Ray, SLURM, plugins), workers, trackers, cost planning.

Packages import only from earlier stages (``tests/test_layout.py``)."""
