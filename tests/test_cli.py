"""The command line: listings, exit codes and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from initbench.cli import main
from initbench.selection.counted import read_results


def test_methods_and_suites_list(capsys):
    assert main(["methods"]) == 0
    listed = capsys.readouterr().out
    assert "lora" in listed and "pissa" in listed and "Kaiming" in listed
    assert main(["suites"]) == 0
    listed = capsys.readouterr().out
    assert "mini" in listed and "smoke" in listed and "addition" in listed


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["evaluate", "--suite", "smoke", "--method", "nope"], "unknown method 'nope'"),
        (["evaluate", "--suite", "nope", "--method", "lora"], "unknown suite 'nope'"),
        (["evaluate", "--suite", "smoke", "--method", "lora", "--seeds", "a,b"], "--seeds"),
        (["leaderboard", "/no/such/dir"], "no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("initbench: error:") and fragment in err[0]


def test_malformed_suite_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: 3\n")
    assert main(["evaluate", "--suite", str(bad), "--method", "lora"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "model" in err


def test_evaluate_leaderboard_validate_roundtrip(tmp_path, capsys):
    out = tmp_path / "runs"
    assert (
        main(
            [
                "evaluate",
                "--suite",
                "smoke",
                "--method",
                "base",
                "--method",
                "lora",
                "--seeds",
                "0,1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert read_results(out).num_rows == 2 * 2 * 2
    capsys.readouterr()
    assert main(["leaderboard", str(out)]) == 0
    table = capsys.readouterr().out
    assert "base (reference)" in table and "(n=2)" in table and "compare_sums (acc)" in table
    assert main(["validate", str(out)]) == 0


def test_tuned_protocol_needs_a_tuning_grid(tmp_path, capsys):
    smoke = (Path(__file__).parents[1] / "tasks" / "smoke.yaml").read_text()
    suite = tmp_path / "untuned.yaml"
    suite.write_text(smoke[: smoke.index("tuning:")].replace("name: smoke", "name: untuned"))
    assert main(["sweep", "--suite", str(suite), "--method", "lora", "--protocol", "tuned", "--plan"]) == 2
    err = capsys.readouterr().err
    assert "has no 'tuning' section" in err and "untuned.yaml" in err
