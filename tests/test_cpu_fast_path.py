"""The score-agreement arithmetic of ``benchmarks/cpu_fast_path.py`` (the benchmark itself runs by hand)."""

from __future__ import annotations

import importlib.util
import sys

from conftest import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("cpu_fast_path", REPO / "benchmarks" / "cpu_fast_path.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_agreement_puts_the_difference_against_the_seed_spread():
    bench = _bench()
    key = ("lora", "addition", "exact_match")
    base = {key: {0: 0.2, 1: 0.4, 2: 0.3, 3: 0.5}}
    same_noise = {key: {0: 0.25, 1: 0.35, 2: 0.3, 3: 0.5}}
    shifted = {key: {s: v + 0.5 for s, v in base[key].items()}}
    (row,) = bench.agreement(base, same_noise, "bf16")
    assert row[:5] == ["lora", "addition", "exact_match", "bf16", 4] and row[9] == "yes"
    (row,) = bench.agreement(base, shifted, "bf16")
    # sample s.d. of 0.2, 0.4, 0.3, 0.5 is sqrt(0.05 / 3) = 0.1291; z = 0.5 / (0.1291 * sqrt(2 / 4)) = 5.477
    assert row[8] == "+5.48" and row[9] == "NO"
    assert row[10] == "+5.48"  # the same spread in both modes: the pooled s.d. is that spread
    assert row[11].startswith("+0.5000 ± 0.0000")
    # twice the spread in the mode (0.9, 1.3, 1.1, 1.5; difference of the means 1.2 - 0.35 = 0.85): baseline
    # z = 0.85 / (0.1291 * sqrt(1/2)) = 9.31; pooled s.d. sqrt((0.05/3 + 4 * 0.05/3) / 2) = 0.2041, z = 0.85 / 0.1443 = 5.89
    wider = {key: {s: 0.5 + 2 * v for s, v in base[key].items()}}
    (row,) = bench.agreement(base, wider, "bf16")
    assert row[8] == "+9.31" and row[10] == "+5.89"
    assert bench.agreement(base, {key: {0: 0.1}}, "bf16") == []  # one shared seed: no spread to compare with
    assert bench.MODES["bf16-2x1"].processes(2) == (2, 1) and bench.MODES["float32"].processes(2) == (1, 2)
