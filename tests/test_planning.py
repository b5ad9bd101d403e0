"""``initbench sweep --plan`` on smoke: run counts by kind, seconds per run with their source, and
nothing run."""

from __future__ import annotations

import re

from initbench.cli import main
from initbench.method.registry import get_method
from initbench.run.execution import available_cores
from initbench.run.harness import run_one

PLAN = [
    "sweep",
    "--suite",
    "smoke",
    "--method",
    "lora",
    "--method",
    "base",
    "--seeds",
    "0,1",
    "--protocol",
    "tuned",
    "--plan",
]


def _row(text: str, method: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {method} "))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_plan_counts_runs_and_names_the_source_of_each_estimate(smoke_suite, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main([*PLAN, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # 2 tasks x 3 rates x 1 tuning seed trials; (lora + base) x 2 tasks x 2 seeds at the default rate;
    # lora's finals: 2 tasks x 2 seeds
    assert _row(text, "lora")[1:4] == ["6/6", "4/4", "4/4"] and _row(text, "base")[1:4] == ["0/0", "4/4", "0/0"]
    assert "runs: 18 pending of 18 planned" in text and "nothing was run" in text
    assert "calibration now: 3 lora steps" in _row(text, "lora")[5]
    assert not out.exists()  # nothing run, nothing written

    run_one(smoke_suite, get_method("lora"), smoke_suite.tasks[0], 0, out)
    workers = available_cores()
    assert main([*PLAN, "--out", str(out), "--workers", str(workers), "--threads-per-run", "1"]) == 0
    text = capsys.readouterr().out
    assert _row(text, "lora")[2] == "3/4" and "runs: 17 pending of 18 planned" in text
    sources = _row(text, "lora")[5]
    assert "addition: " in sources and "median of 1 runs of lora on addition in --out (float32/" in sources
    assert "compare_sums: " in sources and "runs of lora on other tasks" in sources
    assert "runs of other methods" in _row(text, "base")[5]
    run_hours, machine_hours = map(
        float,
        re.search(
            r"run-hours pending: ([\d.]+); machine-hours with \d+ local "
            r"worker\(s\): ([\d.]+)",
            text,
        ).groups(),
    )
    assert abs(machine_hours - run_hours / workers) < 0.011


def test_workers_that_oversubscribe_the_cores_are_refused(tmp_path, capsys):
    assert main([*PLAN, "--out", str(tmp_path), "--workers", "64", "--threads-per-run", "4"]) == 2
    assert "oversubscribes the" in capsys.readouterr().err


def test_local_worker_options_with_another_executor_are_refused(tmp_path, capsys):
    assert main([*PLAN, "--out", str(tmp_path), "--executor", "ray", "--workers", "2"]) == 2
    assert "--workers and --threads-per-run apply to --executor local only" in capsys.readouterr().err


def test_plan_counts_the_trainings_reuse_saves(smoke_suite, tmp_path, capsys, monkeypatch):
    from initbench.sweeps.planning import estimates

    out = tmp_path / "runs"
    run_one(smoke_suite, get_method("lora"), smoke_suite.tasks[0], 0, out)  # addition, seed 0, default rate
    estimate = estimates(smoke_suite, [get_method("lora")], smoke_suite.tasks, out)[("lora", "addition")]
    assert 0 < estimate.train_seconds < estimate.seconds

    assert main([*PLAN, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # compare_sums' seed-0 run at the default rate (addition's is done) trains like its trial at that rate, and
    # each task's tuned final of seed 0 like its trial at the chosen rate; seed 1's like its default-rate run
    # if the default is chosen
    assert "training reuse saves 3 of the pending runs' trainings" in text and "and 2 more if the chosen" in text
    monkeypatch.setenv("INITBENCH_INIT_REUSE", "0")
    assert main([*PLAN, "--out", str(out)]) == 0
    assert "training reuse: off ($INITBENCH_INIT_REUSE=0)" in capsys.readouterr().out


def test_a_training_method_is_not_timed_by_evaluation_only_runs(smoke_suite, tmp_path, capsys):
    out = tmp_path / "runs"
    task = smoke_suite.tasks[0]
    for name in ("base", "lora"):
        assert run_one(smoke_suite, get_method(name), task, 0, out).status == "ok"
    plan = [
        "sweep",
        "--suite",
        "smoke",
        "--method",
        "pissa",
        "--method",
        "base",
        "--seeds",
        "0",
        "--plan",
        "--out",
        str(out),
    ]
    assert main(plan) == 0
    sources = _row(capsys.readouterr().out, "pissa")[5]
    assert f"runs of other training methods on {task.name}" in sources  # lora's run, not base's evaluation
    assert "median of 1 runs" in sources
