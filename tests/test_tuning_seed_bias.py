"""``scripts/tuning_seed_bias.py``: the tuning seed's final minus the other seeds', per protocol."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from _trees import METRIC, smoke_row, write_smoke_run

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "tuning_seed_bias.py"


def _script():
    spec = importlib.util.spec_from_file_location("tuning_seed_bias", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gap_is_the_tuning_seeds_final_minus_the_other_seeds_mean(tmp_path):
    bias = _script()
    task = "compare_sums"
    tuned_scores = {0: 0.80, 1: 0.70, 2: 0.60}  # seed 0 is 0.15 above the others' mean
    fixed_scores = {0: 0.50, 1: 0.55, 2: 0.45}  # seed 0 is at the others' mean
    for seed in range(3):
        common = {"primary_metric": METRIC[task]}
        write_smoke_run(tmp_path, smoke_row("lora", task, seed, fixed_scores[seed], **common))
        write_smoke_run(
            tmp_path,
            smoke_row("lora", task, seed, tuned_scores[seed], lr=0.01, protocol="tuned", selected_lr=0.01, **common),
        )
        write_smoke_run(tmp_path, smoke_row("base", task, seed, 0.3, **common))  # does not train: left out
    tuned = bias.seed_gaps(tmp_path, "tuned", 0)
    fixed = bias.seed_gaps(tmp_path, "fixed", 0)
    assert list(tuned) == [("lora", task)] and math.isclose(tuned[("lora", task)], 0.15)
    assert list(fixed) == [("lora", task)] and math.isclose(fixed[("lora", task)], 0.0, abs_tol=1e-12)
    assert bias.seed_gaps(tmp_path, "tuned", 5) == {}  # no final of that seed: nothing to compare
    mean, low, high = bias.mean_with_interval([0.1, 0.2, 0.3, 0.4])
    assert math.isclose(mean, 0.25) and 0.1 <= low < mean < high <= 0.4
