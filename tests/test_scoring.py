"""The math scorer compares numbers as numbers (issue 18, finding 14)."""

from __future__ import annotations

import pytest

from initbench.inputs.evaluation import task_yaml_path
from initbench.inputs.scoring import exact_match, parse_number

KWARGS = {"ignore_case": True, "ignore_punctuation": False, "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}


@pytest.mark.parametrize(
    "text, value",
    [
        ("8", 8.0),
        ("8.0", 8.0),
        ("1,000", 1000.0),
        ("$1,000.50", 1000.5),
        ("-3", -3.0),
        ("2/3", 2 / 3),
        ("#### 42.", 42.0),
        (".5", 0.5),
        ("0.6666666666666666", 2 / 3),
        (" 7 ", 7.0),
    ],
)
def test_parse_number_reads_the_forms_answers_take(text, value):
    assert parse_number(text) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("text", ["", "eight", "1.2.3", "[invalid]", "2/0", "inf", "nan", None])
def test_parse_number_refuses_what_is_not_one_number(text):
    assert parse_number(text) is None


@pytest.mark.parametrize(
    "prediction, gold",
    [
        ("8.0", "8"),
        ("8", "8.00"),
        ("1000", "1,000"),
        ("2/3", "0.6666666666666666"),
        ("0.666667", "0.6666666666666666"),
        ("$5", "5"),
        ("-0", "0"),
    ],
)
def test_equal_numbers_score_one(prediction, gold):
    assert exact_match([prediction], [gold], **KWARGS) == {"exact_match": 1.0}


@pytest.mark.parametrize(
    "prediction, gold", [("8.1", "8"), ("0.67", "0.6666666666666666"), ("80", "8"), ("[invalid]", "8"), ("", "0")]
)
def test_different_numbers_score_zero(prediction, gold):
    assert exact_match([prediction], [gold], **KWARGS) == {"exact_match": 0.0}


def test_text_answers_fall_back_to_lm_evals_string_match():
    assert exact_match(["Yes"], ["yes"], **KWARGS)["exact_match"] == 1.0
    assert exact_match(["yes"], ["no"], **KWARGS)["exact_match"] == 0.0
    assert exact_match(["8.0", "9", "x"], ["8", "8", "x"], **KWARGS)["exact_match"] == pytest.approx(2 / 3)


def test_the_gsm8k_task_scores_with_the_numeric_exact_match():
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(task_yaml_path("initbench_gsm8k"))
    (metric,) = config["metric_list"]
    assert callable(metric["metric"]) and metric["metric"].__name__ == "exact_match"  # keeps the metric's name
    assert metric["metric"](predictions=["8.0"], references=["8"], **KWARGS) == {"exact_match": 1.0}
