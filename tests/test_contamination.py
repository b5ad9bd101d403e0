"""Contamination between each task's training and evaluated splits (issue 18, finding 13)."""

from __future__ import annotations

import json
import random
import time

import pytest
import yaml
from conftest import SHARED_DATA, quick_smoke_suite

from initbench.inputs.contamination import (
    TrainingIndex,
    check_results,
    contamination_report,
    main,
    refusal,
    report_path,
    split_overlap,
    tokens,
    write_report,
)
from initbench.spec.suite import load_suite

WORDS = (
    "apple banana cherry dates eggs flour grapes honey ice jam kiwi lemon mango nuts olives pears quince rice salt tea"
).split()


def _question(rng: random.Random, n: int = 20) -> str:
    return "Question: " + " ".join(rng.choice(WORDS) for _ in range(n)) + f" {rng.randint(0, 10**6)}?\nAnswer:"


def test_normalization_keeps_arithmetic_and_drops_case_and_punctuation():
    assert tokens("Janet's ducks, LAY 16 eggs!") == ("janet", "s", "ducks", "lay", "16", "eggs")
    assert tokens("7+5=") != tokens("7-5=")


def test_exact_and_near_duplicates_are_found():
    rng = random.Random(0)
    train = [{"prompt": _question(rng)} for _ in range(50)]
    long_copy = train[3]["prompt"].upper().replace(" ", "  ")  # same words, other case and spacing
    words = train[7]["prompt"].split()
    one_word_changed = " ".join(words[:-3] + ["zebra"] + words[-2:])  # 3 of its 16 8-grams are new
    evaluated = [{"prompt": long_copy}, {"prompt": _question(rng)}, {"prompt": one_word_changed}]
    overlap = split_overlap("t", "test", TrainingIndex(train), evaluated)
    assert (overlap.records, overlap.train_records, overlap.exact) == (3, 50, 1)
    index = TrainingIndex(train)
    assert index.containment({"prompt": one_word_changed})[1] == pytest.approx(13 / 16)
    assert index.containment({"prompt": _question(rng)})[1] < 0.2
    assert overlap.near == 2  # the copy, and the question with one word changed


def test_multiple_choice_duplicates_need_the_same_options():
    train = [{"prompt": "Question: Thermometers\nAnswer:", "choices": ["a fever", "the wind"], "label": 0}]
    index = TrainingIndex(train)
    assert index.containment({"prompt": "Question: thermometers\nAnswer:", "choices": ["the wind", "a fever"]})[0]
    assert not index.containment({"prompt": "Question: Thermometers\nAnswer:", "choices": ["rain", "snow"]})[0]


def _files_suite(tmp_path, overlap: int, accepted: str = ""):
    """quick-smoke with 2,000 training and 1,000 test records, the first ``overlap`` test records copied from training."""
    rng = random.Random(1)
    train = [{"prompt": _question(rng), "completion": " x"} for _ in range(2000)]
    test = train[:overlap] + [{"prompt": _question(rng), "completion": " x"} for _ in range(1000 - overlap)]
    for name, rows in (("train", train), ("test", test), ("validation", test[-10:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = quick_smoke_suite(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["tasks"][0]["data"] = {"files": {s: str(tmp_path / f"{s}.jsonl") for s in ("train", "validation", "test")}}
    if accepted:
        spec["contamination_ok"] = accepted
    path.write_text(yaml.safe_dump(spec))
    return load_suite(str(path))


def test_a_contaminated_suite_is_reported_fast_and_refused_unless_it_says_why(tmp_path):
    suite = _files_suite(tmp_path, overlap=50)
    start = time.perf_counter()
    report = contamination_report(suite)
    assert time.perf_counter() - start < 5  # 2,000 x 1,000 records: a preflight's budget
    test = next(o for o in report.overlaps if o.split == "test")
    assert (test.exact, test.near, test.records) == (50, 50, 1000)
    assert "near 50 (5.0%)" in report.render()
    why = refusal(suite, report)
    assert why and "quick-smoke.yaml" in why and "addition test 5.0% (50/1000)" in why and "contamination_ok" in why
    accepted = _files_suite(tmp_path, overlap=50, accepted="the official splits share these questions")
    assert accepted.spec_hash == suite.spec_hash  # a statement about the data, not a setting
    assert refusal(accepted, contamination_report(accepted)) is None
    clean = _files_suite(tmp_path, overlap=5)  # 0.5%: under the 1% threshold
    assert refusal(clean, contamination_report(clean)) is None


def test_validate_contributed_needs_an_uncontaminated_report(tmp_path):
    smoke = load_suite("smoke")
    keys = [(smoke.name, smoke.spec_hash)]
    problems = check_results(tmp_path, keys)
    assert len(problems) == 1 and f"no contamination-{smoke.spec_hash}.json for suite 'smoke'" in problems[0]
    report = contamination_report(smoke)
    write_report(report, tmp_path)
    assert check_results(tmp_path, keys) == []
    report.overlaps[0].near = report.overlaps[0].records  # a report that says the test set is in training
    write_report(report, tmp_path)
    (problem,) = check_results(tmp_path, keys)
    assert str(report_path(tmp_path, smoke)) in problem and "addition test 100.0% (8/8)" in problem


def test_every_sweep_records_the_report(tmp_path):
    from initbench.method.registry import get_method
    from initbench.sweeps.executors import InlineExecutor
    from initbench.sweeps.sweep import run_sweep

    suite = _files_suite(tmp_path, overlap=50)
    lines: list[str] = []
    run_sweep(suite, [get_method("base")], [0], tmp_path / "runs", InlineExecutor(), report=lines.append)
    saved = json.loads(report_path(tmp_path / "runs", suite).read_text())
    assert saved["suite_hash"] == suite.spec_hash and saved["ngram"] == 8 and saved["threshold"] == 0.01
    assert any("contamination: smoke | addition test: 5.0%" in line for line in lines)


@pytest.mark.skipif(not (SHARED_DATA / "math" / "math_data.json").exists(), reason="../shared/data is absent")
def test_builtin_suites_on_the_shared_data(capsys):
    """Measured: the offline `math` suite trains on 1,055 of GSM8K's 1,319 test questions, word for word."""
    math = contamination_report(load_suite("math"), SHARED_DATA)
    (gsm8k,) = math.overlaps
    assert (gsm8k.exact, gsm8k.near, gsm8k.records, gsm8k.train_records) == (1055, 1055, 1319, 3260)
    assert refusal(load_suite("math"), math) is not None
    assert main(["math-mini", "--data-dir", str(SHARED_DATA)]) == 0  # GSM8K train vs test: clean
    assert "gsm8k test: 1319 records vs 400 training: exact 0 (0.0%), near 0 (0.0%)" in capsys.readouterr().out
    for name in ("smoke", "mini"):
        assert all(o.near == 0 for o in contamination_report(load_suite(name)).overlaps)


def test_cli_validate_contributed_refuses_a_contaminated_report(tmp_path, capsys):
    from initbench.cli import main as cli

    out = tmp_path / "runs"
    assert cli(["evaluate", "--suite", "smoke", "--method", "base", "--seeds", "0", "--out", str(out)]) == 0
    assert cli(["validate", "--contributed", str(out)]) == 0
    path = report_path(out, load_suite("smoke"))
    saved = json.loads(path.read_text())
    saved["overlaps"][0]["near"] = saved["overlaps"][0]["records"]
    path.write_text(json.dumps(saved))
    capsys.readouterr()
    assert cli(["validate", "--contributed", str(out)]) == 1
    assert "test data overlaps its training data above 1%" in capsys.readouterr().out
