"""Sweeps: a grid of runs (methods x tasks x seeds, plus the tuning trials of the ``tuned``
protocol), minus the runs already finished, handed to an executor (``initbench.sweeps.executors``).

A run is a :class:`RunSpec`, plain data a worker on another process or machine turns back into
``harness.run_one``.  Each run writes its own files atomically, so workers share one results
folder and a crash loses only the run in flight.  After each batch the sweep looks at the files:
a run whose process died without writing one (killed, out of memory, segfault) gets a ``failed``
result naming the reason (``run_record.record_crash``), and a rerun of the same command redoes only
the runs that are not ``ok`` or ``diverged``.

``tuned`` runs in two stages (each (method, task)'s grid, ``initbench.selection.tuning_grid``, is resolved before
anything runs): first every trial (and the runs at the suite's default rate), then,
once a (method, task) has all its trials, the selection (``initbench.selection.protocol.select``) and the
finals at the chosen rate.  Each sweep writes its plan to ``<out>/<suite>/sweeps/`` so
``initbench status`` can show what is done, failed and missing, and the suite's contamination
report (``initbench.inputs.contamination``) to ``<out>/<suite>/contamination-<spec hash>.json``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from initbench.core import atomic
from initbench.spec.suite import Suite, TaskSpec
from initbench.store import claims
from initbench.store.results import DONE, RESULTS_SUFFIX, STALE, finished_status, read_rows, run_stem

if TYPE_CHECKING:  # torch-free at import: the CLI's parser and ``status`` do not need it
    from initbench.method.api import InitMethod
    from initbench.run.harness import RunOutcome
    from initbench.selection.tuning_grid import TrialGrid
    from initbench.sweeps.executors import Executor


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep, as plain data (JSON- and pickle-able) for a worker anywhere."""

    suite: str  # path of the suite YAML
    method: str
    task: str
    seed: int
    out: str
    lr: float | None = None  # None: the suite's rate
    split: str = "test"  # validation: a tuning trial
    protocol: str | None = None
    selected_lr: float | None = None
    data_dir: str | None = None
    force: bool = False
    save_adapters: bool = False  # keep a final run's trained adapter (initbench.run.export)

    @property
    def label(self) -> str:
        what = ("" if self.lr is None else f" | lr {self.lr:g}") + (" | validation" if self.split != "test" else "")
        return f"{self.method} | {self.task} | seed {self.seed}{what}"

    def stem(self, suite: Suite) -> Path:
        return run_stem(
            Path(self.out), suite.name, self.method, self.task, self.seed, suite.spec_hash, lr=self.lr, split=self.split
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))


def execute_run(spec: RunSpec) -> dict:
    """Run ``spec`` in this process (what every worker calls); returns its outcome as a dict.
    Never raises for a failure inside the run: ``run_one`` records it."""
    from initbench.inputs.datasets_io import use_data_dir
    from initbench.method.registry import get_method
    from initbench.run.harness import run_one
    from initbench.spec.suite import load_suite

    if spec.data_dir is not None:
        use_data_dir(spec.data_dir)
    suite = load_suite(spec.suite)
    task = suite.task(spec.task)
    outcome = run_one(
        suite,
        get_method(spec.method),
        task,
        spec.seed,
        Path(spec.out),
        force=spec.force,
        lr=spec.lr,
        split=spec.split,
        protocol=spec.protocol,
        selected_lr=spec.selected_lr,
        save_adapters=spec.save_adapters,
    )
    return {"status": outcome.status, "error": outcome.error, "scores": outcome.scores}


def grid(
    suite: Suite,
    methods: list[InitMethod],
    seeds: list[int],
    out: Path,
    *,
    protocol: str = "fixed",
    tasks: list[TaskSpec] | None = None,
    data_dir: Path | None = None,
    force: bool = False,
    grids: dict[tuple[str, str], TrialGrid] | None = None,
    save_adapters: bool = False,
) -> list[RunSpec]:
    """The first stage of a sweep: every run at the suite's rate and, for ``tuned``, every trial of
    each (method, task)'s grid (``grids``, default :func:`tuning_grids`)."""
    tasks = suite.tasks if tasks is None else tasks
    if protocol == "tuned" and grids is None:
        grids = tuning_grids(suite, methods, tasks, out)
    common = {
        "suite": str(Path(suite.path).resolve()),
        "out": str(Path(out).resolve()),
        "data_dir": None if data_dir is None else str(Path(data_dir).resolve()),
        "force": force,
        "save_adapters": save_adapters,
    }
    specs = []
    for method in methods:
        for task in tasks:
            if protocol == "tuned" and method.trains:
                specs += [
                    RunSpec(method=method.name, task=task.name, seed=s, lr=lr, split="validation", **common)
                    for lr in grids[(method.name, task.name)].rates
                    for s in suite.tuning.seeds
                ]
            specs += [RunSpec(method=method.name, task=task.name, seed=s, **common) for s in seeds]
    return specs


def tuning_grids(
    suite: Suite, methods: list[InitMethod], tasks: list[TaskSpec] | None, out: Path
) -> dict[tuple[str, str], TrialGrid]:
    """The tuning grid of every training method and task (``initbench.selection.tuning_grid.trial_grids``): a
    ``ProtocolError`` naming what to run first when a curvature-centred grid lacks its inputs."""
    from initbench.selection.tuning_grid import trial_grids

    tasks = suite.tasks if tasks is None else tasks
    return trial_grids(suite, [m.name for m in methods if m.trains], [t.name for t in tasks], out)


def run_sweep(
    suite: Suite,
    methods: list[InitMethod],
    seeds: list[int],
    out: Path,
    executor: Executor,
    *,
    protocol: str = "fixed",
    tasks: list[TaskSpec] | None = None,
    data_dir: Path | None = None,
    force: bool = False,
    report: Callable[[str], None] = print,
    save_adapters: bool = False,
) -> list[RunOutcome]:
    """Run the grid with ``executor``: pending runs only (unless ``force``), crashes recorded,
    and for ``tuned`` the selection and the finals at the chosen rate; returns every run's outcome.
    ``save_adapters`` reaches every worker (``RunSpec``): final runs keep their trained adapters."""
    grids = tuning_grids(suite, methods, tasks, out) if protocol == "tuned" else {}  # before anything runs
    first = grid(
        suite,
        methods,
        seeds,
        out,
        protocol=protocol,
        tasks=tasks,
        data_dir=data_dir,
        force=force,
        grids=grids,
        save_adapters=save_adapters,
    )
    write_plan(suite, methods, seeds, out, protocol, tasks, grids)
    record_contamination(suite, out, report)
    outcomes = _run_batch(suite, methods, first, executor, report)
    if protocol == "tuned":
        await_claims(suite, first, report)  # trials another sweep is computing, before selecting on them
        while extra := _edge_trials(suite, out, first, grids, report):  # grids extended in place
            write_plan(suite, methods, seeds, out, protocol, tasks, grids)  # status expects the added trials
            outcomes += _run_batch(suite, methods, extra, executor, report)
            await_claims(suite, extra, report)
        outcomes += _run_batch(
            suite, methods, _tuned_finals(suite, methods, seeds, out, first, grids, report), executor, report
        )
        from initbench.selection.protocol import superseded

        for reason in superseded(out).values():
            report(f"set aside (kept, not counted): {reason}")
    from initbench.run.init_cache import cache_folder

    shutil.rmtree(cache_folder(out), ignore_errors=True)  # the stored inits and trainings, reused until here
    return outcomes


def await_claims(suite: Suite, specs: list[RunSpec], report: Callable[[str], None], poll: float = 2.0) -> None:
    """Wait until no run of ``specs`` is claimed by another live process (it finished or died)."""
    import time

    said = False
    while True:
        held = [s for s in specs if claims.holder(s.stem(suite)) is not None]
        if not held:
            return
        if not said:
            report(f"waiting for {len(held)} run(s) another process is computing ({held[0].label}, ...)")
            said = True
        time.sleep(poll)


def _edge_trials(
    suite: Suite,
    out: Path,
    first: list[RunSpec],
    grids: dict[tuple[str, str], TrialGrid],
    report: Callable[[str], None],
) -> list[RunSpec]:
    """Where the best trial rate of a (method, task) is on an edge of its grid and the suite's
    ``tuning.extend_at_edge`` allows another rate: that rate added to its grid (in ``grids``) and its
    trials, one per tuning seed (``initbench.selection.tuning_grid.extension_wanted``)."""
    from initbench.selection.protocol import best_trial_rate, score_trials
    from initbench.selection.tuning_grid import extension_wanted

    extra = []
    trial_templates = {(s.method, s.task): s for s in first if s.split == "validation"}
    for (method, task_name), template in trial_templates.items():
        grid = grids[(method, task_name)]
        chosen = best_trial_rate(score_trials(suite, method, suite.task(task_name), out, grid))
        lr = extension_wanted(grid, chosen, suite.tuning.extend_at_edge)
        if lr is None:
            continue
        grids[(method, task_name)] = grid.with_rate(lr)
        report(
            f"{method} | {task_name}: best validation rate {chosen:g} is an edge of the rates tried "
            f"({', '.join(f'{r:g}' for r in grid.rates)}): lr {lr:g} joins its grid "
            f"({len(grid.extended) + 1} of at most {suite.tuning.extend_at_edge} past an edge; run unless already done)"
        )
        extra += [replace(template, seed=s, lr=lr) for s in suite.tuning.seeds]
    return extra


def _tuned_finals(
    suite: Suite,
    methods: list[InitMethod],
    seeds: list[int],
    out: Path,
    first: list[RunSpec],
    grids: dict[tuple[str, str], TrialGrid],
    report,
) -> list[RunSpec]:
    from initbench.selection.protocol import select

    finals = []
    for method in methods:
        if not method.trains:
            continue
        for task_name in dict.fromkeys(s.task for s in first if s.method == method.name):
            task = suite.task(task_name)
            selection = select(suite, method.name, task, out, grids[(method.name, task_name)])
            report(f"selected lr {selection.chosen:g} for {method.name} | {task.name} ({selection.reason})")
            template = next(s for s in first if s.method == method.name and s.task == task_name)
            finals += [
                replace(
                    template, seed=s, lr=selection.chosen, split="test", protocol="tuned", selected_lr=selection.chosen
                )
                for s in seeds
            ]
    return finals


def _run_batch(
    suite: Suite,
    methods: list[InitMethod],
    specs: list[RunSpec],
    executor: Executor,
    report,
) -> list[RunOutcome]:
    from initbench.run.harness import RunOutcome
    from initbench.run.run_record import record_crash

    hashes = DataHashes(suite)
    found = {s: None if s.force else finished_status(s.stem(suite), hashes.get(s)) for s in specs}
    todo = [s for s in specs if found[s] not in DONE]
    held = {s: h for s in todo if (h := claims.holder(s.stem(suite))) is not None}
    if held:
        report(
            f"{len(held)} of {len(specs)} runs are being computed by another process "
            f"({next(iter(held.values())).describe()}{', ...' if len(held) > 1 else ''}): left to it"
        )
        todo = [s for s in todo if s not in held]
    pending = set(todo)
    outcomes = [
        RunOutcome(s.method, s.task, s.seed, "skipped", s.stem(suite))
        for s in specs
        if s not in pending and s not in held
    ]
    outcomes += [
        RunOutcome(s.method, s.task, s.seed, "claimed", s.stem(suite), f"being computed by {h.describe()}")
        for s, h in held.items()
    ]
    finished = len(specs) - len(todo) - len(held)
    if finished:
        report(f"{finished} of {len(specs)} runs already finished in {specs[0].out}: skipped")
    stale = sum(status == STALE for status in found.values())
    if stale:
        report(
            f"{stale} finished run(s) in {specs[0].out} were written on other data (their data_hash differs "
            "from the data's now): rerun"
        )
    by_name = {m.name: m for m in methods}
    for i, (spec, crash) in enumerate(executor.run(todo, report), start=1):
        if crash is not None:
            claims.clear_when_gone(spec.stem(suite))  # the dead worker's claim, once it is seen gone
        if (
            crash is not None
            and finished_status(spec.stem(suite), hashes.get(spec)) not in DONE
            and claims.holder(spec.stem(suite)) is None
        ):  # not if another sweep took the run over meanwhile
            task = suite.task(spec.task)
            record_crash(
                suite,
                by_name[spec.method],
                task,
                spec.seed,
                Path(spec.out),
                crash,
                lr=spec.lr,
                split=spec.split,
                protocol=spec.protocol,
                selected_lr=spec.selected_lr,
            )
        outcome = read_outcome(suite, spec)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in outcome.scores.items())
        report(
            f"[{i}/{len(todo)}] {outcome.status}: {spec.label}"
            + (f": {shown}" if shown else "")
            + (f": {outcome.error}" if outcome.error else "")
        )
        outcomes.append(outcome)
    return outcomes


class DataHashes:
    """The content hash of the data each run of a suite reads (``data.run_data``), computed once per
    (task, split) in the driver; None where the data cannot be read here (the run then records why)."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self._known: dict[tuple[str, str], str | None] = {}

    def get(self, spec: RunSpec) -> str | None:
        key = (spec.task, spec.split)
        if key not in self._known:
            from initbench.inputs.data import run_data

            try:
                self._known[key] = run_data(self.suite.task(spec.task), self.suite.path, spec.split).content_hash
            except Exception:  # a missing file, a hub without network: the worker records the failure
                self._known[key] = ""
        return self._known[key] or None


def read_outcome(suite: Suite, spec: RunSpec) -> RunOutcome:
    """The outcome of a run, from its results file (whoever wrote it)."""

    from initbench.run.harness import RunOutcome

    stem = spec.stem(suite)
    path = stem.with_name(stem.name + RESULTS_SUFFIX)
    if not path.exists():
        other = claims.holder(stem)
        if other is not None:  # the worker found it claimed by another sweep
            return RunOutcome(
                spec.method, spec.task, spec.seed, "claimed", None, f"being computed by {other.describe()}"
            )
        return RunOutcome(spec.method, spec.task, spec.seed, "failed", None, "no results file was written")
    rows = read_rows(path, ["status", "error", "metric", "value"])
    if not rows:
        return RunOutcome(spec.method, spec.task, spec.seed, "failed", path, "the results file written cannot be read")
    scores = {r["metric"]: r["value"] for r in rows if r["metric"] is not None and r["value"] is not None}
    return RunOutcome(spec.method, spec.task, spec.seed, rows[0]["status"], path, rows[0]["error"] or "", scores)


# --------------------------------------------------------------------------- plans, for ``initbench status``


def write_plan(
    suite: Suite,
    methods: list[InitMethod],
    seeds: list[int],
    out: Path,
    protocol: str,
    tasks: list[TaskSpec] | None,
    grids: dict[tuple[str, str], TrialGrid] | None = None,
) -> Path:
    """Record what a sweep was asked to run (``<out>/<suite>/sweeps/<hash>.json``), written atomically;
    the rates per method and task under ``tuning.rates`` where they are not the suite's ``lr_grid``
    (a curvature-centred grid; a grid with rates added past an edge, those also under ``tuning.extended``)."""
    from initbench.selection.tuning_grid import tuning_record

    tuning = None if suite.tuning is None else tuning_record(suite.tuning)
    own = {key: g for key, g in (grids or {}).items() if suite.tuning.curvature_centred or g.extended}
    if tuning is not None and own:
        tuning["rates"] = {}
        for (method, task), trial_grid in sorted(own.items()):
            tuning["rates"].setdefault(method, {})[task] = list(trial_grid.rates)
            if trial_grid.extended:
                tuning.setdefault("extended", {}).setdefault(method, {})[task] = list(trial_grid.extended)
    plan = {
        "suite": suite.name,
        "suite_path": str(suite.path),
        "suite_hash": suite.spec_hash,
        "methods": [m.name for m in methods],
        "trains": {m.name: m.trains for m in methods},
        "tasks": [t.name for t in (suite.tasks if tasks is None else tasks)],
        "seeds": list(seeds),
        "protocol": protocol,
        "tuning": tuning,
    }
    digest = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(out) / suite.name / "sweeps" / f"{digest}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    plan["command"] = " ".join(["initbench", *sys.argv[1:]]) if sys.argv and "initbench" in sys.argv[0] else ""
    plan["written"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic.write_json(path, plan)
    return path


def record_contamination(suite: Suite, out: Path, report: Callable[[str], None] = print) -> Path | None:
    """Write the suite's contamination report beside its results (``initbench.inputs.contamination``) and say
    so when a task's test data overlaps its training data above the threshold; None if it could not be
    computed (the runs then record why their data did not load)."""
    from initbench.inputs import contamination

    try:
        found = contamination.contamination_report(suite)
        path = contamination.write_report(found, out)
    except Exception as err:  # never stops a sweep: a run reading the same data records the failure
        report(f"contamination not checked: {type(err).__name__}: {err}")
        return None
    for overlap in found.over_threshold():
        report(
            f"contamination: {suite.name} | {overlap.task} {overlap.split}: {overlap.near_fraction:.1%} of records "
            f"({overlap.near}/{overlap.records}) near-duplicate training records"
            + (
                f" (accepted by the suite: {suite.contamination_ok})"
                if suite.contamination_ok
                else f"; validate --contributed refuses this suite (see {path})"
            )
        )
    return path
