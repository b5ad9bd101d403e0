"""Issue 18, findings 1-3 and 9: a results tree the leaderboard cannot be fooled by (superseded
tuned finals, duplicates, impossible rows, unreadable files); synthetic `smoke` rows, no training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _trees import METRIC, SMOKE, fixed_tree, smoke_row, tamper, write_smoke_run

from initbench.board import leaderboard
from initbench.cli import main
from initbench.selection.counted import read_results
from initbench.selection.protocol import select
from initbench.selection.status import grid_status
from initbench.selection.tuning_grid import trial_grids
from initbench.store.results import CURVE_SUFFIX, ResultsError, finished_status, validate


def _select(out, task):
    """What a sweep does once lora's trials on ``task`` are in ``out``: select on the suite's grid."""
    return select(SMOKE, "lora", SMOKE.task(task), out, trial_grids(SMOKE, ["lora"], [task], out)[("lora", task)])


def _tuned_tree(out, stale_lr=0.1, chosen_lr=0.01):
    """base and lora fixed (seeds 0, 1), lora's trials (``chosen_lr`` best), lora's tuned finals at
    ``chosen_lr`` and, left over from an earlier selection, at ``stale_lr``."""
    fixed_tree(out)
    for task in METRIC:
        for lr in SMOKE.tuning.lr_grid:
            write_smoke_run(out, smoke_row("lora", task, 0, 0.9 if lr == chosen_lr else 0.2, lr=lr, split="validation"))
        _select(out, task)
        for lr, values in ((stale_lr, (0.3, 0.9)), (chosen_lr, (0.5, 0.6))):
            for seed, value in enumerate(values):
                write_smoke_run(out, smoke_row("lora", task, seed, value, lr=lr, selected_lr=lr))
    return out


def test_superseded_tuned_finals_are_set_aside_and_reported(tmp_path, capsys):
    out = _tuned_tree(tmp_path / "runs")
    table = read_results(out)
    tuned = [r for r in table.to_pylist() if r["protocol"] == "tuned" and r["phase"] == "final"]
    assert {r["selected_lr"] for r in tuned} == {0.01} and len(tuned) == 4
    cell = next(
        c
        for c in leaderboard.build(table).suites[0].protocols["tuned"].cells
        if c.method == "lora" and c.task == "addition"
    )
    assert cell.seeds == 2 and cell.mean == pytest.approx(0.55) and cell.std == pytest.approx(0.0707, abs=1e-4)
    assert read_results(out, set_aside=False).num_rows == table.num_rows + 4  # kept on disk
    status = grid_status(out)
    assert len(status.set_aside) == 4 and all("superseded by the selection of lr 0.01" in r for r in status.set_aside)
    assert status.counts[("smoke", "lora")]["done"] == 2 * 2 + 2 * 3 + 2 * 2  # fixed, trials, current finals
    assert main(["validate", "--contributed", str(out)]) == 0
    assert capsys.readouterr().err.count("set aside (not counted)") == 4
    assert main(["leaderboard", str(out)]) == 0
    assert "4 tuned final(s) superseded by a later selection set aside" in capsys.readouterr().err
    from initbench.board.publish import publish

    manifest = json.loads((publish(out, "v1", root=tmp_path / "board") / "manifest.json").read_text())
    assert len(manifest["set_aside"]) == 4 and manifest["results"]["runs"] == table.num_rows


def test_a_run_in_two_files_is_an_error_naming_both(tmp_path, capsys):
    out = fixed_tree(tmp_path / "runs", methods=("lora",), seeds=(0,))
    original = out / "smoke/lora/addition" / f"seed0-{SMOKE.spec_hash}.results.parquet"
    copy = out / "zz-copy/smoke/lora/addition" / original.name
    copy.parent.mkdir(parents=True)
    shutil.copy(original, copy)
    shutil.copy(
        original.with_name(original.name.replace(".results", ".curve")),
        copy.with_name(copy.name.replace(".results", ".curve")),
    )
    with pytest.raises(ResultsError, match="in two files") as err:
        read_results(out)
    assert str(original) in str(err.value) and str(copy) in str(err.value)
    assert any(str(original) in p and str(copy) in p for p in validate(out))
    # status, leaderboard, validate and publish all refuse, naming both files
    for argv in (
        ["leaderboard", str(out)],
        ["status", str(out)],
        ["validate", "--contributed", str(out)],
        ["leaderboard", "publish", str(out), "--version", "v1", "--root", str(tmp_path / "board")],
    ):
        code = main(argv)
        printed = capsys.readouterr()
        assert code in (1, 2) and str(copy) in printed.out + printed.err, argv
    assert not (tmp_path / "board" / "v1").exists()


@pytest.mark.parametrize("damage", ["zero-byte results", "garbage results", "foreign table", "zero-byte curve"])
def test_an_unreadable_file_is_one_line_naming_it(tmp_path, capsys, damage):
    out = fixed_tree(tmp_path / "runs")
    stem = out / "smoke/lora/addition" / f"seed0-{SMOKE.spec_hash}"
    target = stem.with_name(stem.name + (CURVE_SUFFIX if "curve" in damage else ".results.parquet"))
    if damage.startswith("zero-byte"):
        target.write_bytes(b"")
    elif damage == "garbage results":
        target.write_bytes(b"PAR1 not parquet at all")
    else:
        pq.write_table(pa.table({"a": [1]}), target)
    for argv in (["leaderboard", str(out)], ["status", str(out)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("initbench: error:") and str(target) in err[0], (argv, err)
    assert finished_status(stem) is None  # a resumed sweep redoes (repairs) the run


def test_resume_repairs_a_zero_byte_curve(tmp_path):
    from conftest import quick_smoke_suite

    suite = quick_smoke_suite(tmp_path)
    out = tmp_path / "runs"
    argv = ["evaluate", "--suite", str(suite), "--method", "lora", "--seeds", "0", "--out", str(out)]
    assert main(argv) == 0
    (curve,) = out.rglob(f"*{CURVE_SUFFIX}")
    curve.write_bytes(b"")
    assert main(argv) == 0
    assert pq.read_table(curve).num_rows == 2 and read_results(out, CURVE_SUFFIX).num_rows == 2


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"value": float("nan")}, "status ok with a value that is not a finite number (exact_match=nan)"),
        ({"value": float("inf")}, "status ok with a value that is not a finite number (exact_match=inf)"),
        ({"value": 1e9}, "outside its metric's range [0, 1] (exact_match=1000000000.0)"),
        ({"value": -5.0}, "outside its metric's range [0, 1] (exact_match=-5.0)"),
        ({"value": None}, "status ok with a value that is not a finite number (exact_match=None)"),
        ({"metric": "acc"}, "metric 'acc' is not one task 'initbench_addition' defines (exact_match)"),
        ({"stderr": float("nan")}, "stderr nan"),
        ({"method": "no-such-init", "run_id": "smoke/no-such-init/addition/seed0/x"}, "unknown method 'no-such-init'"),
        ({"lora_rank": 64}, "lora_rank 64, the suite grants 4"),
        ({"learning_rate": 0.1}, "learning_rate 0.1, expected the suite's budget.optimizer.lr 0.01"),
        ({"optimizer_steps": 600}, "600 optimizer steps, the suite grants budget.steps 6"),
        ({"train_tokens": 10**9}, "1000000000 training tokens, the suite grants at most 1,152"),
        ({"calibration_examples": 999}, "999 calibration examples"),
        ({"eval_limit": 1}, "eval_limit 1, the suite says 8"),
    ],
)
def test_contributed_rows_must_be_possible_under_their_suite(tmp_path, capsys, change, fragment):
    out = fixed_tree(tmp_path / "runs")
    assert main(["validate", "--contributed", str(out)]) == 0
    capsys.readouterr()
    path = tamper(write_smoke_run(out, smoke_row("lora", "addition", 0, 0.5)), **change)
    assert main(["validate", "--contributed", str(out)]) == 1
    printed = capsys.readouterr().out
    assert any(line.startswith(f"{path}: ") and fragment in line for line in printed.splitlines()), printed


def test_contributed_seeds_must_be_complete_for_every_method(tmp_path, capsys):
    out = fixed_tree(tmp_path / "runs", methods=("base",), seeds=(0, 1))
    fixed_tree(out, methods=("lora",), seeds=(0,))
    assert main(["validate", "--contributed", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "method 'lora': missing fixed runs (task, seed): addition seed 1, compare_sums seed 1" in printed


def test_contributed_tuned_rows_must_use_the_grid_and_their_selection(tmp_path, capsys):
    out = _tuned_tree(tmp_path / "runs")
    assert main(["validate", "--contributed", str(out)]) == 0
    trial = write_smoke_run(out, smoke_row("lora", "addition", 0, 0.5, lr=0.05, split="validation"))
    final = tamper(
        write_smoke_run(out, smoke_row("lora", "compare_sums", 1, 0.5, lr=0.01, selected_lr=0.01)),
        learning_rate=0.1,
        eval_split="validation",
    )
    assert main(["validate", "--contributed", str(out)]) == 1
    printed = capsys.readouterr().out
    assert (
        f"{trial}: lora | addition | seed 0: learning_rate 0.05, expected a rate of the suite's tuning grid" in printed
    )
    assert f"{final}: lora | compare_sums | seed 1: learning_rate 0.1, expected its selected_lr (0.01)" in printed
    assert f"{final}: lora | compare_sums | seed 1: phase final scored on 'validation'" in printed


@pytest.mark.parametrize(
    "value, fragment",
    [
        (float("nan"), "not a finite number"),
        (float("inf"), "not a finite number"),
        (None, "not a finite number"),
        (1e9, "outside its metric's range [0, 1]"),
        (-5.0, "outside its metric's range [0, 1]"),
    ],
)
def test_a_finished_run_without_a_possible_value_is_refused_everywhere(tmp_path, capsys, value, fragment):
    out = fixed_tree(tmp_path / "runs")
    path = tamper(out / "smoke/lora/addition" / f"seed0-{SMOKE.spec_hash}.results.parquet", value=value)
    for argv in (
        ["leaderboard", str(out)],
        ["validate", str(out)],
        ["leaderboard", "publish", str(out), "--version", "v1", "--root", str(tmp_path / "board")],
    ):
        assert main(argv) in (1, 2), argv
        printed = capsys.readouterr()
        assert f"{path}: status ok with a value " in printed.out + printed.err and fragment in printed.err + printed.out
    assert not (tmp_path / "board" / "v1").exists()


@pytest.mark.parametrize(
    "seeds, fragment",
    [
        ("99999999999999999999", "99999999999999999999 is out of range"),
        ("-1", "-1 is out of range"),
        ("0,4294967296", "4294967296 is out of range"),
    ],
)
def test_seeds_out_of_range_are_refused(tmp_path, capsys, seeds, fragment):
    out = tmp_path / "runs"
    assert main(["evaluate", "--suite", "smoke", "--method", "lora", f"--seeds={seeds}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and not out.exists()


@pytest.mark.parametrize("kind", ["a file", "under a file", "a dangling link", "unwritable"])
def test_an_unusable_out_is_refused_before_any_run(tmp_path, capsys, kind):
    out = {
        "a file": tmp_path / "file",
        "under a file": tmp_path / "file" / "runs",
        "a dangling link": tmp_path / "link",
        "unwritable": Path("/proc/initbench-runs"),
    }[kind]
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    assert main(["evaluate", "--suite", "smoke", "--method", "lora", "--seeds", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out {out}" in err[0], err
    assert not list(tmp_path.rglob("*.parquet"))


@pytest.mark.parametrize(
    "arrow_says, fragment", [(True, "No space left on device"), (False, "the file written is incomplete")]
)
def test_a_full_disk_is_one_line_and_loses_no_finished_run(tmp_path, capsys, monkeypatch, arrow_says, fragment):
    """The second run's files (seed 1: its samples, curve, results) hit ENOSPC (half written, then Arrow's
    error): exit 2, one line naming the file; the first run's files stay, no temporary file is left, and a rerun finishes the grid."""
    from conftest import quick_smoke_suite

    suite = quick_smoke_suite(tmp_path)
    out = tmp_path / "runs"
    real = pq.write_table

    def disk_fills_after_one_run(table, where, *args, **kwargs):
        real(table, where, *args, **kwargs)
        if "seed1" in Path(where).name:  # half the bytes made it, then Arrow's own ENOSPC error (its exact shape)
            Path(where).write_bytes(Path(where).read_bytes()[: Path(where).stat().st_size // 2])
            if arrow_says:  # else the write was cut short silently
                raise OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq, "write_table", disk_fills_after_one_run)
    argv = ["evaluate", "--suite", str(suite), "--method", "lora", "--seeds", "0,1", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("initbench: error:") and fragment in err and "seed1" in err, err
    assert [p.name for p in out.rglob("*.parquet")] and not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert read_results(out).column("seed").to_pylist() == [0]
    monkeypatch.setattr(pq, "write_table", real)
    assert main(argv) == 0
    assert sorted(read_results(out).column("seed").to_pylist()) == [0, 1]


def test_a_selection_older_than_its_trials_is_not_complete(tmp_path, capsys):
    """A sweep killed after redoing a trial but before selecting again: the selection on disk no
    longer follows from the trials, so status is not complete and validate --contributed says so."""
    from initbench.method.registry import get_method
    from initbench.sweeps.sweep import write_plan

    out = _tuned_tree(tmp_path / "runs")
    write_plan(SMOKE, [get_method("base"), get_method("lora")], [0, 1], out, "tuned", None)
    assert grid_status(out).complete
    tamper(out / "smoke/lora/addition" / f"seed0-lr0.1-validation-{SMOKE.spec_hash}.results.parquet", value=0.95)
    status = grid_status(out)
    assert not status.complete and len(status.missing) == 2
    assert all("rerun the sweep to select again" in m and "seed 0 trial at 0.2, now 0.95" in m for m in status.missing)
    assert main(["validate", "--contributed", str(out)]) == 1
    assert "selection-" in capsys.readouterr().out
    _select(out, "addition")  # what the rerun does first: 0.1 wins now
    status = grid_status(out)  # the finals at 0.1 are on disk already; those at 0.01 are set aside now
    assert status.complete and sum("addition" in r and "at lr 0.01, superseded" in r for r in status.set_aside) == 2


def test_a_resumed_tuned_sweep_sets_aside_the_finals_of_its_old_selection(tmp_path):
    """Issue 18's reproduction: the worker of the winning trial dies; the first pass selects another
    rate and runs finals there; the rerun redoes the trial, selects anew and runs new finals.  Only
    the new final counts (not two rows for one seed); the old ones are kept, set aside, reported."""
    from conftest import quick_smoke_suite

    from initbench.method.registry import get_method
    from initbench.spec.suite import load_suite
    from initbench.sweeps.executors import InlineExecutor
    from initbench.sweeps.sweep import run_sweep

    suite = load_suite(str(quick_smoke_suite(tmp_path)))
    lora = [get_method("lora")]
    run_sweep(suite, lora, [0], tmp_path / "probe", InlineExecutor(), protocol="tuned", report=lambda _: None)
    winner = json.loads(next((tmp_path / "probe").rglob("selection-*.json")).read_text())["selected_lr"]

    class KillsTheWinningTrial(InlineExecutor):
        def run(self, specs, report):
            for spec in specs:
                if spec.split == "validation" and spec.lr == winner:
                    yield spec, "killed by signal 9 (SIGKILL)"
                else:
                    yield from super().run([spec], report)

    out = tmp_path / "runs"
    run_sweep(suite, lora, [0], out, KillsTheWinningTrial(), protocol="tuned", report=lambda _: None)
    first = json.loads(next(out.rglob("selection-*.json")).read_text())["selected_lr"]
    assert first != winner
    said = []
    run_sweep(suite, lora, [0], out, InlineExecutor(), protocol="tuned", report=said.append)
    table = read_results(out)
    tuned = [r for r in table.to_pylist() if r["protocol"] == "tuned" and r["phase"] == "final"]
    assert [(r["seed"], r["selected_lr"]) for r in tuned] == [(0, winner)]
    assert len(list(out.rglob(f"*-lr{first!r}-test-*.results.parquet"))) == 1  # kept on disk
    assert sum(f"at lr {first!r}, superseded by the selection of lr {winner!r}" in line for line in said) == 1
    assert len(grid_status(out).set_aside) == 1


def test_contributed_metric_names_of_a_function_metric_are_the_recorded_keys():
    """initbench_gsm8k's metric is a `!function` (initbench.inputs.scoring.exact_match): the names a contributed
    row may carry are the keys runs record (``exact_match,strict-match``), not the function's repr."""
    from initbench.selection.contributed import _task_metrics

    names = _task_metrics("initbench_gsm8k")
    assert {"exact_match,strict-match", "exact_match,flexible-extract"} <= names
    assert not any("<function" in n for n in names)
