"""The continuous task scores (tasks/lm_eval/initbench_scores.py) against direct computations."""

from __future__ import annotations

import importlib.util
import math

import torch

from initbench.spec.suite import builtin_suite_dir


def _scores():
    path = builtin_suite_dir() / "lm_eval" / "initbench_scores.py"
    spec = importlib.util.spec_from_file_location("initbench_scores_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gold_prob_is_the_per_token_geometric_mean_probability():
    token_probs = [0.9, 0.5, 0.8]  # three digits, one token each
    ll = sum(math.log(p) for p in token_probs)
    out = _scores().gold_answer_scores({"completion": "579"}, [(ll, True)])
    assert math.isclose(out["gold_prob"], (0.9 * 0.5 * 0.8) ** (1 / 3), rel_tol=1e-12)
    assert out["greedy_match"] == 1.0
    assert _scores().gold_answer_scores({"completion": "1"}, [(-50.0, False)])["greedy_match"] == 0.0


def test_p_correct_is_the_softmax_mass_on_the_label_and_acc_the_argmax():
    lls = [-1012.5, -1010.0, -1013.0]  # large magnitudes: no underflow
    expected = torch.softmax(torch.tensor(lls, dtype=torch.float64), 0)
    for label in range(3):
        out = _scores().choice_scores({"label": label}, [(ll, False) for ll in lls])
        assert math.isclose(out["p_correct"], float(expected[label]), rel_tol=1e-12)
        assert out["acc"] == float(label == 1)
