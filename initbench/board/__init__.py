"""Stage 8, what is published: the leaderboard (compute, text, page, plots), statistics, publish and reproduce.

Packages import only from earlier stages (``tests/test_layout.py``)."""
