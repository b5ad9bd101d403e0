"""Experiment trackers: every run a sweep computes, logged to Weights & Biases, trackio or TensorBoard.

``--report-to wandb|trackio|tensorboard|none`` (several allowed, as transformers' Trainer spells
it; default ``none``) on ``evaluate`` and ``sweep``.  Nothing is logged while a run trains: when a
run's files are written, the driver reads them back and logs, per run, one tracker run named by
its run id (grouped by suite/method/task) with the row's metadata as its config, the loss curve
the run recorded (``train/loss``, ``train/lr``, ``train/tokens`` per optimizer step) and the final
scores (``eval/<metric>`` at the last step; W&B's summary too).  Training is not slowed, and it
works the same with every executor (a worker writes the files, the driver logs them).

The trackers are optional extras (``pip install 'initbench[wandb]'``, ``[trackio]``,
``[tensorboard]``); a missing one is a :class:`TrackerError` naming the extra before any run
starts.  W&B logs to ``$WANDB_PROJECT`` (default ``initbench``; offline with
``WANDB_MODE=offline``), trackio to ``$TRACKIO_PROJECT`` (default ``initbench``, a local
database unless ``$TRACKIO_SPACE_ID`` is set), TensorBoard to ``<out>/tensorboard/``.  A
tracker that fails to log a run prints a warning; the run's results are already on disk.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from initbench.store.results import CURVE_SCHEMA, CURVE_SUFFIX, RESULTS_SUFFIX, read_file
from initbench.store.samples import run_file

if TYPE_CHECKING:
    from initbench.spec.suite import Suite
    from initbench.sweeps.executors import Executor
    from initbench.sweeps.sweep import RunSpec

#: tracker -> (the module it needs, the package that provides it, the initbench extra that installs it)
TRACKERS = {
    "wandb": ("wandb", "wandb", "wandb"),
    "trackio": ("trackio", "trackio", "trackio"),
    "tensorboard": ("torch.utils.tensorboard", "tensorboard", "tensorboard"),
}


class TrackerError(ValueError):
    """``--report-to`` names an unknown tracker, or one whose package is not installed."""


class Tracker(Protocol):
    """One tracker: a tracker run per initbench run, started, logged to step by step, finished."""

    def start(self, run_id: str, group: str, config: dict[str, Any]) -> None: ...

    def log(self, values: dict[str, float], step: int) -> None: ...

    def finish(self, summary: dict[str, Any]) -> None: ...


def parse_report_to(values: list[str] | None) -> list[str]:
    """The trackers ``--report-to`` names (space- or comma-separated; ``none``: no tracker)."""
    names = list(dict.fromkeys(n.strip().lower() for v in values or [] for n in v.split(",") if n.strip()))
    unknown = [n for n in names if n not in TRACKERS and n != "none"]
    if unknown:
        raise TrackerError(f"--report-to {unknown[0]}: not a tracker; one of {', '.join(TRACKERS)}, or none")
    if "none" in names:
        if len(names) > 1:
            raise TrackerError(f"--report-to {' '.join(names)}: 'none' cannot go with a tracker")
        return []
    return names


def check_installed(names: list[str]) -> None:
    """Import every named tracker's module; a ``TrackerError`` naming the extra to install if one is missing."""
    for name in names:
        module, package, extra = TRACKERS[name]
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise TrackerError(
                f"--report-to {name}: the {package} package is not installed ({err}); pip install 'initbench[{extra}]'"
            ) from None


def make_trackers(names: list[str], out: Path) -> list[Tracker]:
    """The trackers named (``parse_report_to``), TensorBoard writing under ``<out>/tensorboard``."""
    made: list[Tracker] = []
    for name in names:
        if name == "tensorboard":
            made.append(TensorBoardTracker(Path(out) / "tensorboard"))
        else:
            made.append(RunAPITracker(name, os.environ.get(f"{name.upper()}_PROJECT") or "initbench"))
    return made


class RunAPITracker:
    """W&B and trackio, which share an API: ``module.init(project, name, group, config)`` returns a run
    with ``log(values, step=)`` and ``finish()`` (and, for W&B, a ``summary``)."""

    def __init__(self, module: str, project: str):
        self.module, self.project, self.run = module, project, None

    def start(self, run_id: str, group: str, config: dict[str, Any]) -> None:
        self.run = importlib.import_module(self.module).init(
            project=self.project, name=run_id, group=group, config=config
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def finish(self, summary: dict[str, Any]) -> None:
        if getattr(self.run, "summary", None) is not None:
            self.run.summary.update(summary)
        self.run.finish()
        self.run = None


class TensorBoardTracker:
    """TensorBoard event files, one folder per run under ``root`` (``<suite>/<method>/<task>/<rest of the
    run id>``): scalars per step, the config and summary as text."""

    def __init__(self, root: Path):
        self.root, self.writer = Path(root), None

    def start(self, run_id: str, group: str, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        rest = run_id[len(group) :].strip("/").replace("/", "-") if run_id.startswith(group) else run_id
        self.writer = SummaryWriter(log_dir=str(self.root / group / rest))
        self.writer.add_text("config", _markdown(config))

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def finish(self, summary: dict[str, Any]) -> None:
        self.writer.add_text("summary", _markdown(summary))
        self.writer.close()
        self.writer = None


def _markdown(values: dict[str, Any]) -> str:
    return "\n".join(["| key | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in values.items()])


def log_run(results_path: Path, trackers: list[Tracker]) -> list[str]:
    """Log the run whose results file is ``results_path`` (and its curve beside it) to every tracker;
    returns one line per tracker that failed (the others still log)."""
    rows = read_file(results_path).to_pylist()
    curve_path = run_file(results_path, CURVE_SUFFIX)
    curve = read_file(curve_path, CURVE_SCHEMA).to_pylist() if curve_path.exists() else []
    first = rows[0]
    config = {k: _plain(v) for k, v in first.items() if k not in ("metric", "value", "stderr")}
    scores = {f"eval/{r['metric']}": r["value"] for r in rows if r["metric"] is not None and r["value"] is not None}
    points = [
        (
            p["step"],
            {
                k: p[n]
                for k, n in (("train/loss", "loss"), ("train/lr", "lr"), ("train/tokens", "tokens"))
                if p[n] is not None
            },
        )
        for p in curve
    ]
    last_step, last = points.pop() if points else (0, {})
    summary = {"status": first["status"], **({"error": first["error"]} if first["error"] else {}), **scores}
    group = f"{first['suite']}/{first['method']}/{first['task']}"
    failures = []
    for tracker in trackers:
        try:
            tracker.start(first["run_id"], group, config)
            for step, values in points:
                tracker.log(values, step)
            tracker.log({**last, **scores}, last_step)
            tracker.finish(summary)
        except Exception as err:  # the results are on disk; a tracker's failure costs only its log
            failures.append(f"{type(tracker).__name__}: {type(err).__name__}: {err}")
    return failures


def _plain(value: Any) -> Any:
    """A config value every tracker takes: numbers, strings, booleans, None; anything else as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return value.isoformat() if hasattr(value, "isoformat") else json.dumps(value, default=str)


@dataclass
class TrackedExecutor:
    """An executor that logs each run to ``trackers`` once its files are written (``log_run``): it
    passes every (spec, crash) of ``inner`` on, and logs the run when the sweep has taken it (a
    crashed run's ``failed`` record is written by then)."""

    inner: Executor
    suite: Suite
    trackers: list[Tracker]

    def run(self, specs: list[RunSpec], report: Callable[[str], None]) -> Iterator[tuple[RunSpec, str | None]]:
        for spec, crash in self.inner.run(specs, report):
            yield spec, crash
            path = run_file(spec.stem(self.suite), RESULTS_SUFFIX)
            if not path.exists():  # left to another sweep that claimed it
                continue
            try:
                failures = log_run(path, self.trackers)
            except Exception as err:  # an unreadable file: the sweep reports the run itself
                failures = [f"{type(err).__name__}: {err}"]
            for failure in failures:
                report(f"initbench: warning: --report-to: {spec.label} not logged: {failure}")
