"""The evaluation protocols: ``fixed`` (every method at the suite's learning rate) and ``tuned``.

``tuned`` gives every method the same tuning allowance, the suite's ``tuning`` section::

    tuning: {lr_grid: [0.001, 0.003, 0.01, 0.03], seeds: [0]}

or the same number of rates per method, centred on the rate its curvature at init predicts
(``initbench.selection.tuning_grid``; the curvature and lora's tuned selection must be in the results folder)::

    tuning: {grid: curvature-centred, points: 5, seeds: [0]}

1. **Trials.**  For every training method and task, each rate of its grid is trained
   with each tuning seed on the training split and scored by lm-eval on the
   ``validation`` split, never on test (``harness.run_one(..., lr=lr, split="validation")``:
   the test file is not even handed to lm-eval).  Tasks without a validation split
   carve one out of their training data (``data.with_validation``).  Each trial is
   its own result file (``phase = "trial"``).
2. **Selection.**  Per (method, task), the rate with the best mean over tuning seeds
   of the task's primary metric (the first of its lm-eval ``metric_list``) on
   validation; a failed or diverged trial scores worst.  With ``tuning.extend_at_edge: K``,
   while that rate is the lowest or highest of the rates tried, the next rate past that
   edge is tried as well, at most K times (``initbench.selection.tuning_grid.extension_wanted``).  Ties go to the rate closest
   to the suite's default in log space, then to the smaller rate.  When every trial
   failed, the suite's default rate is used.  The trials, the grid (kind and rates) and the
   choice are written to ``<out>/<suite>/<method>/<task>/selection-<spec hash>.json``.
3. **Finals.**  The chosen rate is run with the evaluation seeds on the test split
   (``protocol = "tuned"``, ``phase = "final"``, ``selected_lr``), and so is the suite's
   default rate (``protocol = "fixed"``, the same files as ``--protocol fixed``), so the
   leaderboard reports both the tuned score and the score at the default rate.

Each final is tied to its selection by ``selected_lr``: when a resumed sweep redoes a trial and
selects another rate, the finals at the old rate are set aside (:func:`superseded`: kept on disk,
not read as results, reported), and a selection older than its trials (:func:`stale_selection`)
leaves the finals missing until the sweep selects again.

Methods that do not train (``base``) have nothing to tune: their fixed runs stand
for both protocols.  The tuning cost (every trial's compute) is summed per method
in the leaderboard's cost table.  ``initbench.sweeps.sweep`` schedules the runs (trials and default-rate
runs first, then the grids of ``initbench.selection.tuning_grid``, :func:`select` and the finals); this module
holds the rules and the selection files.  Which rows a table counts under each protocol is
``initbench.selection.counted``'s; whether contributed results are complete, ``initbench.selection.contributed``'s.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from initbench.core import atomic
from initbench.inputs.evaluation import task_primary_metric
from initbench.spec.suite import Suite, TaskSpec
from initbench.spec.trust import suite_lm_eval_dir
from initbench.store.results import RESULTS_SUFFIX, read_rows, run_stem

if TYPE_CHECKING:  # pragma: no cover
    from initbench.selection.tuning_grid import TrialGrid

PROTOCOLS = ("fixed", "tuned")


class ProtocolError(ValueError):
    """The suite or the request does not allow the protocol asked for."""


@dataclass
class Selection:
    """The tuning outcome of one (method, task)."""

    method: str
    task: str
    metric: str
    higher_is_better: bool
    trials: dict[float, list[float | None]] = field(default_factory=dict)  # lr -> score per tuning seed (None: not ok)
    chosen: float | None = None
    reason: str = ""

    def mean(self, lr: float) -> float:
        scores = self.trials.get(lr, [])
        if not scores or any(v is None or math.isnan(v) for v in scores):
            return -math.inf if self.higher_is_better else math.inf
        return sum(scores) / len(scores)


def choose_lr(selection: Selection, default_lr: float) -> float:
    """The rate of ``selection.trials`` with the best validation mean (see the module docstring)."""
    sign = 1.0 if selection.higher_is_better else -1.0
    finite = {lr for lr in selection.trials if math.isfinite(selection.mean(lr))}
    if not finite:
        selection.chosen, selection.reason = default_lr, "every trial failed: the suite's default rate"
        return default_lr
    best = max(sign * selection.mean(lr) for lr in finite)
    tied = [lr for lr in finite if sign * selection.mean(lr) == best]
    chosen = min(tied, key=lambda lr: (abs(math.log(lr / default_lr)), lr))
    selection.chosen = chosen
    selection.reason = (
        f"best mean validation {selection.metric} over {len(selection.trials[chosen])} tuning seed(s)"
        + (f"; tie among {sorted(tied)} broken towards the default rate" if len(tied) > 1 else "")
    )
    return chosen


def _trial_score(stem: Path, metric: str) -> float | None:
    path = stem.with_name(stem.name + RESULTS_SUFFIX)
    rows = read_rows(path, ["status", "metric", "value"])
    if rows is None:
        return None  # missing or unreadable: not a score (the sweep redoes such a trial before selecting)
    values = [r["value"] for r in rows if r["status"] == "ok" and r["metric"] == metric]
    return float(values[0]) if values and values[0] is not None else None


def score_trials(suite: Suite, method: str, task: TaskSpec, out: Path, grid: TrialGrid) -> Selection:
    """Read the trials of (method, task) on ``grid`` (its grid under the suite's tuning,
    ``initbench.selection.tuning_grid.trial_grids``) under ``out`` and choose the rate; writes nothing."""
    metric, higher = task_primary_metric(task, suite.path, suite_lm_eval_dir(suite))
    selection = Selection(method, task.name, metric, higher)
    for lr in grid.rates:
        for seed in suite.tuning.seeds:
            stem = run_stem(out, suite.name, method, task.name, seed, suite.spec_hash, lr=lr, split="validation")
            selection.trials.setdefault(lr, []).append(_trial_score(stem, metric))
    choose_lr(selection, suite.budget.optimizer.lr)
    return selection


def best_trial_rate(selection: Selection) -> float | None:
    """The rate chosen from the trials' scores; None when every trial failed (the default rate stands in)."""
    chosen = selection.chosen
    return chosen if chosen is not None and math.isfinite(selection.mean(chosen)) else None


def select(suite: Suite, method: str, task: TaskSpec, out: Path, grid: TrialGrid) -> Selection:
    """:func:`score_trials`, then write the selection file."""
    selection = score_trials(suite, method, task, out, grid)
    _write_selection(out, suite, selection, grid)
    return selection


def selection_path(out: Path, suite: str, method: str, task: str, spec_hash: str) -> Path:
    """Where the tuning choice of (method, task) is written."""
    return Path(out) / suite / method / task / selection_name(spec_hash)


def selection_name(spec_hash: str) -> str:
    """The selection file's name, beside the runs of its (method, task)."""
    return f"selection-{spec_hash}.json"


def _write_selection(out: Path, suite: Suite, selection: Selection, grid: TrialGrid) -> Path:
    path = selection_path(out, suite.name, selection.method, selection.task, suite.spec_hash)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "suite": suite.name,
        "suite_hash": suite.spec_hash,
        "method": selection.method,
        "task": selection.task,
        "metric": selection.metric,
        "higher_is_better": selection.higher_is_better,
        "split": "validation",
        "default_lr": suite.budget.optimizer.lr,
        "tuning_seeds": list(suite.tuning.seeds),
        "trials": [
            {"lr": lr, "scores": scores, "mean": selection.mean(lr) if math.isfinite(selection.mean(lr)) else None}
            for lr, scores in sorted(selection.trials.items())
        ],
        "selected_lr": selection.chosen,
        "reason": selection.reason,
        "grid": grid.as_record(),
    }
    atomic.write_json(path, payload)
    return path


def superseded(out: Path) -> dict[str, str]:
    """Tuned finals under ``out`` that their (method, task)'s selection no longer asks for, as
    run id -> reason.  A final is tied to the selection it came from by ``selected_lr``; when a
    resumed sweep redoes a trial and selects another rate, the finals at the old rate are set
    aside: kept on disk, not counted by the leaderboard, ``status`` or ``validate``, and reported."""
    stale: dict[str, str] = {}
    for path in sorted(Path(out).rglob(f"*{RESULTS_SUFFIX}")):
        rows = read_rows(path, ["run_id", "suite_hash", "protocol", "phase", "selected_lr"])
        if rows is None:
            continue  # not a readable results file: reading the tree reports it
        if not rows or rows[0]["protocol"] != "tuned" or rows[0]["phase"] != "final":
            continue
        row = rows[0]
        selection = path.parent / selection_name(row["suite_hash"])
        chosen = _selected_lr(selection)
        if chosen is not None and (
            row["selected_lr"] is None or not math.isclose(row["selected_lr"], chosen, rel_tol=1e-12)
        ):
            stale[row["run_id"]] = (
                f"{path}: a tuned final at lr {row['selected_lr']!r}, superseded by the selection "
                f"of lr {chosen!r} ({selection})"
            )
    return stale


def stale_selection(path: Path) -> str | None:
    """Why the selection file ``path`` no longer matches the trials beside it (a trial redone or
    removed after the choice was made: a sweep interrupted between the trial and the selection),
    or None.  A rerun of the sweep selects again."""
    try:
        payload = json.loads(path.read_text())
        trials = [
            (float(t["lr"]), seed, score)
            for t in payload["trials"]
            for seed, score in zip(payload["tuning_seeds"], t["scores"])
        ]
        names = (payload["suite"], payload["method"], payload["task"], payload["suite_hash"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{path}: unreadable selection ({err}); rerun the sweep to select again"
    for lr, seed, recorded in trials:
        stem = run_stem(path.parent, *names[:3], seed, names[3], lr=lr, split="validation")
        current = _trial_score(path.parent / stem.name, payload["metric"])
        if current != recorded:
            return (
                f"{path}: chose lr {payload['selected_lr']!r} with the lr {lr!r} seed {seed} trial at {recorded!r}, "
                f"now {current!r}; rerun the sweep to select again"
            )
    return None


def stale_selections(out: Path) -> list[str]:
    """:func:`stale_selection` of every selection file under ``out``."""
    return [reason for path in sorted(Path(out).rglob(selection_name("*"))) if (reason := stale_selection(path))]


def _selected_lr(path: Path) -> float | None:
    """The rate a selection file chose, None when there is none (or it cannot be read)."""
    try:
        return float(json.loads(path.read_text())["selected_lr"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
