"""Plan a sweep before running it (``initbench sweep ... --plan``): how many runs, and how many
machine-hours they take, from measured throughput.  Nothing is run and nothing is written.

Runs are counted by kind: tuning trials (validation split), runs at the suite's default rate, and
tuned finals (one per method, task and seed, at the rate the selection will choose), each as
planned and as still pending in ``--out``.  The seconds of one run come, per method and task,
from the first source that has them, and each row names its source:

1. ``--out`` holds finished runs of this method and task (this suite spec): their median wall time;
2. ... of this method on other tasks: their median;
3. ... of other methods of this suite that train as it does (a method that trains is not timed by
   ``base``'s evaluation-only runs), on this task, else on any task: their median; else of any other
   method: their median;
4. none: a calibration, now: ``lora`` on the suite's model and first task, one warm-up step and
   ``CALIBRATION_STEPS`` timed training steps in the execution mode in force, scaled to the
   budget's steps: a lower bound (no init, no evaluation, no model load).

A method whose measured runs restored their init (``init_reused``) saves its median init time on
every trial after the first of a (task, seed).  A run of a LoRA method that will load the training of
an earlier run of the grid (``initbench.run.train_cache``: same method, task, seed, rate and training
examples -- a trial's are the final's where the task has a validation split of its own) is counted
without its median ``train_seconds`` (model load, init and evaluation remain); a tuned final counts so
when its seed is a tuning seed (there is a trial at every rate the selection can choose), and the
summary says how many more will when the chosen rate is the suite's default.

Machine-hours divide the run-hours by the local workers, assuming each run takes as long as the
measured ones did at their thread count (the rows' ``torch_threads`` and ``execution`` are shown so a
mismatch is visible).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from initbench.selection.counted import read_results
from initbench.store.results import DONE, RESULTS_SUFFIX, finished_status, format_lr
from initbench.sweeps.sweep import grid

if TYPE_CHECKING:
    from initbench.method.api import InitMethod
    from initbench.spec.suite import Suite, TaskSpec, TuningSpec

CALIBRATION_STEPS = 3


@dataclass
class Estimate:
    seconds: float
    source: str
    init_seconds: float = 0.0  # saved per reused trial
    reusable: bool = False
    train_seconds: float = 0.0  # saved per run whose training is reused


def measured_runs(out: Path, suite: Suite) -> list[dict[str, Any]]:
    """One row per finished run (``ok``/``diverged``) of this suite spec in ``out``."""
    if not Path(out).is_dir():
        return []
    table = read_results(out)
    runs: dict[str, dict[str, Any]] = {}
    for row in table.to_pylist():
        if row["suite_hash"] == suite.spec_hash and row["status"] in DONE and row["wall_seconds"]:
            runs.setdefault(row["run_id"], row)
    return list(runs.values())


def _mode(rows: list[dict[str, Any]]) -> str:
    """The execution modes and thread counts the rows were measured in, e.g. ``float32/2t``."""
    modes = set()
    for row in rows:
        settings = json.loads(row["execution"]) if row.get("execution") else {}
        precision = "bf16" if settings.get("autocast") == "bf16" else "float32"
        modes.add(f"{precision}{'+compile' if settings.get('compile') else ''}/{row.get('torch_threads') or '?'}t")
    return ", ".join(sorted(modes))


def _from_rows(rows: list[dict[str, Any]], what: str) -> Estimate:
    trained = [r for r in rows if not r.get("train_reused")] or rows
    computed = [r for r in trained if not r.get("init_reused")] or trained  # a run that computed init and training
    inits = [r["init_seconds"] for r in computed if r.get("init_seconds")]
    trains = [r["train_seconds"] for r in trained if r.get("train_seconds")]
    return Estimate(
        statistics.median(r["wall_seconds"] for r in computed),
        f"median of {len(rows)} {what} in --out ({_mode(rows)})",
        statistics.median(inits) if inits else 0.0,
        any(r.get("init_reused") for r in rows),
        statistics.median(trains) if trains else 0.0,
    )


@dataclass
class TimedSteps:
    """Training steps timed in this process: the tokens they trained on, the training loop's own seconds,
    and the wall seconds around the call."""

    steps: int
    tokens: int
    seconds: float
    wall_seconds: float


def time_lora_steps(suite: Suite, steps: int) -> tuple[TimedSteps, TimedSteps]:
    """``lora`` on the suite's model and first task, as a run attaches it: one warm-up step, then
    ``steps`` timed ones (what ``sweep --plan`` calibrates with and ``benchmarks/cpu_fast_path.py`` times)."""
    from initbench.core.seeding import pick_device
    from initbench.inputs import data as task_data
    from initbench.inputs.models import linear_params
    from initbench.method.registry import get_method
    from initbench.run.attach import attach_and_initialize, lora_settings
    from initbench.run.lending import base_model, return_base_model
    from initbench.run.train import train
    from initbench.spec.budget import Spend

    device, method = pick_device(), get_method("lora")
    loaded = base_model(suite, device)
    model = loaded.model
    try:
        task = suite.tasks[0]
        examples = task_data.tokenize_records(
            task_data.materialize(task, suite.path).records("train"), loaded.tokenizer, suite.budget.max_length
        )
        base_params = linear_params(model)
        model, _ = attach_and_initialize(
            model,
            loaded.tokenizer,
            method,
            lora_settings(suite.lora, method, suite.family),
            seed=0,
            examples=examples,
            budget=suite.budget,
            lr=suite.budget.optimizer.lr,
            spend=Spend(),
            base_params=base_params,
            device=device,
            family=suite.family,
        )
        timed = []
        for n in (1, steps):
            start = time.perf_counter()
            result = train(
                model,
                examples,
                replace(suite.budget, steps=n),
                lr=suite.budget.optimizer.lr,
                seed=0,
                pad_id=loaded.tokenizer.pad_token_id,
                device=device,
                spend=Spend(),
                base_params=base_params,
            )
            wall = time.perf_counter() - start
            timed.append(TimedSteps(n, sum(int(p["tokens"]) for p in result.curve), result.seconds, wall))
    finally:
        return_base_model(loaded, model)
    return timed[0], timed[1]


def calibrate(suite: Suite, steps: int = CALIBRATION_STEPS) -> Estimate:
    """Seconds of a run's training, from ``steps`` timed ``lora`` steps on the suite's model now."""
    from initbench.core.seeding import pick_device
    from initbench.run import execution

    threads = execution.apply_threads()
    _, timed = time_lora_steps(suite, steps)
    per_step = timed.wall_seconds / steps
    precision = execution.precision(pick_device())
    return Estimate(
        per_step * suite.budget.steps,
        f"calibration now: {steps} lora steps at {per_step:.3g} s/step x {suite.budget.steps} steps "
        f"({precision}/{threads}t; training only: a lower bound)",
        train_seconds=per_step * suite.budget.steps,
    )


def estimates(
    suite: Suite, methods: list[InitMethod], tasks: list[TaskSpec], out: Path
) -> dict[tuple[str, str], Estimate]:
    """Seconds per run of every (method, task), each with its source (see the module docstring)."""
    rows = measured_runs(out, suite)
    by_pair, by_method = defaultdict(list), defaultdict(list)
    for row in rows:
        by_pair[(row["method"], row["task"])].append(row)
        by_method[row["method"]].append(row)
    trained = [r for r in rows if r.get("train_seconds") is not None]
    untrained = [r for r in rows if r.get("train_seconds") is None]
    found: dict[tuple[str, str], Estimate] = {}
    calibrated: Estimate | None = None
    for method in methods:
        for task in tasks:
            pair = (method.name, task.name)
            if by_pair[pair]:
                found[pair] = _from_rows(by_pair[pair], f"runs of {method.name} on {task.name}")
            elif by_method[method.name]:
                found[pair] = _from_rows(by_method[method.name], f"runs of {method.name} on other tasks")
            elif alike := (trained if method.trains else untrained):
                kind = "training" if method.trains else "evaluation-only"
                on_task = [r for r in alike if r["task"] == task.name]
                found[pair] = _from_rows(
                    on_task or alike, f"runs of other {kind} methods" + (f" on {task.name}" if on_task else "")
                )
            elif rows:
                found[pair] = _from_rows(rows, "runs of other methods")
            elif not method.trains:
                found[pair] = Estimate(0.0, "evaluation only, not estimated without measured runs")
            else:
                calibrated = calibrated or calibrate(suite)
                found[pair] = calibrated
    return found


def _final_done(out: Path, suite: Suite, method: str, task: str, seed: int) -> bool:
    """Whether a tuned final of (method, task, seed) at some chosen rate is finished in ``out``."""
    folder = Path(out) / suite.name / method / task
    return any(
        finished_status(p.with_name(p.name.removesuffix(RESULTS_SUFFIX))) in DONE
        for p in folder.glob(f"seed{seed}-lr*-test-{suite.spec_hash}{RESULTS_SUFFIX}")
    )


def _trials_train_like_finals(suite: Suite, task: TaskSpec) -> bool:
    """Whether a tuning trial of ``task`` trains on the same examples as a final: the task has a
    validation split of its own (else a trial trains on the training split less the validation carved
    out of it, ``data.with_validation``).  A generated task is materialized to see (cached); False
    where its data cannot be read here."""
    if task.data.files or task.data.splits:
        return "validation" in (task.data.files or task.data.splits)
    from initbench.inputs.data import materialize

    try:
        return "validation" in materialize(task, suite.path).files
    except Exception:  # the sweep's runs will say why; count no reuse
        return False


def render_plan(
    suite: Suite,
    methods: list[InitMethod],
    seeds: list[int],
    out: Path,
    *,
    protocol: str = "fixed",
    tasks: list[TaskSpec] | None = None,
    workers: int = 1,
) -> str:
    """The plan of a sweep: runs per method by kind (pending / planned), seconds per run and their
    source, run-hours and machine-hours of what is pending."""
    from initbench.run.execution import init_reuse_enabled

    tasks = suite.tasks if tasks is None else tasks
    first = grid(suite, methods, seeds, out, protocol=protocol, tasks=tasks)
    guess = estimates(suite, methods, tasks, out)
    table, total_runs, total_pending, total_seconds = [], 0, 0, 0.0
    reused_trainings = maybe_reused = 0
    for method in methods:
        counts = {kind: [0, 0] for kind in ("trials", "default", "finals")}  # pending, planned
        seconds, sources = 0.0, defaultdict(list)
        reuse_training = method.trains and method.attaches_lora and init_reuse_enabled()
        for task in tasks:
            estimate = guess[(method.name, task.name)]
            sources[f"{estimate.seconds:,.1f} s ({estimate.source})"].append(task.name)
            specs = [s for s in first if s.method == method.name and s.task == task.name]
            shared = reuse_training and _trials_train_like_finals(suite, task)
            seen_init: set[int] = set()
            trained: set[tuple] = set()  # (seed, rate, split or "any"): trainings of earlier runs of the grid
            for spec in specs:
                kind = "trials" if spec.split == "validation" else "default"
                training = (
                    spec.seed,
                    suite.budget.optimizer.lr if spec.lr is None else spec.lr,
                    "any" if shared else spec.split,
                )
                pending = finished_status(spec.stem(suite)) not in DONE
                counts[kind][1] += 1
                if pending:
                    counts[kind][0] += 1
                    saved = (
                        estimate.init_seconds
                        if estimate.reusable and spec.split == "validation" and spec.seed in seen_init
                        else 0.0
                    )
                    if reuse_training and training in trained:
                        saved += estimate.train_seconds
                        reused_trainings += 1
                    seconds += max(estimate.seconds - saved, 0.0)
                if spec.split == "validation":
                    seen_init.add(spec.seed)
                trained.add(training)
            if protocol == "tuned" and method.trains:
                for seed in seeds:
                    counts["finals"][1] += 1
                    if _final_done(out, suite, method.name, task.name, seed):
                        continue
                    counts["finals"][0] += 1
                    if shared and seed in suite.tuning.seeds:  # a trial at every rate the selection can choose
                        seconds += max(estimate.seconds - estimate.train_seconds, 0.0)
                        reused_trainings += 1
                    else:
                        seconds += estimate.seconds
                        at_default = (seed, suite.budget.optimizer.lr, "any" if shared else "test")
                        maybe_reused += reuse_training and at_default in trained
        pending = sum(c[0] for c in counts.values())
        planned = sum(c[1] for c in counts.values())
        total_runs, total_pending, total_seconds = (
            total_runs + planned,
            total_pending + pending,
            total_seconds + seconds,
        )
        table.append(
            [
                method.name,
                *(f"{c[0]}/{c[1]}" for c in counts.values()),
                f"{seconds / 3600:.2f}",
                "; ".join(f"{', '.join(names)}: {source}" for source, names in sources.items()),
            ]
        )
    lines = [
        f"plan: suite {suite.name} ({suite.spec_hash}), protocol {protocol}, seeds {','.join(map(str, seeds))}"
        + (
            f", {_grid_words(suite.tuning)} x tuning seeds {','.join(map(str, suite.tuning.seeds))}"
            if protocol == "tuned" and suite.tuning
            else ""
        ),
        "",
        tabulate(
            table,
            ["method", "trials", "default rate", "finals", "run-hours", "seconds per run (source)"],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
        f"runs: {total_pending} pending of {total_runs} planned (pending/planned per kind above)",
        f"run-hours pending: {total_seconds / 3600:.2f}; machine-hours with {workers} local worker(s): "
        f"{total_seconds / 3600 / workers:.2f} (assumes each run as fast as its source measured it)",
        _reuse_line(reused_trainings, maybe_reused),
        "nothing was run",
    ]
    return "\n".join(lines)


def _reuse_line(reused: int, maybe: int) -> str:
    """What training reuse (``initbench.run.train_cache``) saves of the pending runs, for the plan's summary."""
    from initbench.run.execution import INIT_REUSE_ENV, init_reuse_enabled

    if not init_reuse_enabled():
        return f"training reuse: off (${INIT_REUSE_ENV}=0)"
    return (
        f"training reuse saves {reused} of the pending runs' trainings (a run loads the training of an earlier "
        "run with the same method, task, seed and rate; counted above)"
        + (f", and {maybe} more if the chosen rate is the suite's default" if maybe else "")
    )


def _grid_words(tuning: TuningSpec) -> str:
    """The tuning grid in a plan's first line."""
    more = (
        f" (+ up to {tuning.extend_at_edge} rates past an edge the best rate is on, not counted below)"
        if tuning.extend_at_edge
        else ""
    )
    if tuning.curvature_centred:
        from initbench.selection.tuning_grid import tuning_record

        record = tuning_record(tuning)
        return (
            f"curvature-centred grid of {record['points']} rates x{record['factor']:g} apart per method and task{more}"
        )
    return f"lr grid {', '.join(format_lr(x) for x in tuning.lr_grid)}{more}"
