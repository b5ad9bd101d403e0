"""``initbench validate --contributed``: every row of contributed results against the suite it claims.

The schema (``initbench.store.results``) says a file is well formed; completeness
(:func:`check_contributed`) says no seed or trial is missing; and :func:`check_rows` says
each row is possible under the suite whose spec hash it carries (a finished run's value being
finite and in its metric's range is already a schema rule, ``results.table_problems``): the
metric is one the task's lm-eval YAML defines, its stderr finite, the method is a
registered one, the LoRA rank, learning rate, optimizer steps, training tokens, calibration
examples and evaluation settings are the ones the suite grants, and the phase matches the split.
Problems are reported per file (one line each, the file first).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from initbench.selection.protocol import PROTOCOLS
from initbench.spec.suite import Suite, SuiteError, load_builtin_suite
from initbench.spec.trust import contributed_problems


def check_contributed(table: pa.Table) -> list[str]:
    """Problems with contributed results beyond the schema: each (suite, spec hash) must be a
    built-in suite's current spec hash, and each (suite, method) must be complete: every task of
    the suite with every seed that appears for any method of it (per protocol), and (tuned
    protocol) every trial of the grid; :func:`check_rows` checks each row's values."""
    problems = []
    columns = ["suite", "suite_hash", "method", "task", "seed", "protocol", "phase", "learning_rate", "eval_split"]
    scored = ["status", "metric", "value"]  # for the trials' scores (tables of results files have them)
    has_scores = all(c in table.column_names for c in scored)
    rows = table.select(columns + (scored if has_scores else [])).to_pylist()
    by_suite: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        by_suite[(r["suite"], r["suite_hash"])].append(r)
    for (name, spec_hash), suite_rows in sorted(by_suite.items()):
        try:
            suite = load_builtin_suite(name)  # a name only: a row's "suite" is never read as a path
        except SuiteError:
            problems.append(
                f"suite {name!r} (spec {spec_hash}): not a built-in suite, so its spec hash cannot be "
                "checked; contribute results of a built-in suite"
            )
            continue
        problems += contributed_problems(suite)  # the trust model: own generators and lm-eval tasks only
        if suite.spec_hash != spec_hash:
            problems.append(
                f"suite {name!r}: spec hash {spec_hash} does not match the built-in suite's current "
                f"spec hash {suite.spec_hash}; rerun with this initbench version"
            )
            continue
        tasks = [t.name for t in suite.tasks]
        by_method: dict[str, list[dict]] = defaultdict(list)
        for r in suite_rows:
            by_method[r["method"]].append(r)
        # every method has every evaluation seed any method of the suite has (per protocol)
        suite_seeds = {
            p: {r["seed"] for r in suite_rows if r["phase"] == "final" and r["protocol"] == p} for p in PROTOCOLS
        }
        for method, mrows in sorted(by_method.items()):
            missing = []
            for protocol in PROTOCOLS:
                finals = {(r["task"], r["seed"]) for r in mrows if r["phase"] == "final" and r["protocol"] == protocol}
                if not finals and protocol == "tuned":
                    continue  # not tuned (a method that does not train, or only fixed results)
                seeds = sorted(suite_seeds[protocol])
                gaps = [f"{t} seed {s}" for t in tasks for s in seeds if (t, s) not in finals]
                if gaps:
                    missing.append(f"{protocol} runs (task, seed): {', '.join(gaps)}")
            trials = {(r["task"], r["learning_rate"], r["seed"]) for r in mrows if r["phase"] == "trial"}
            tuned_finals = any(r["protocol"] == "tuned" and r["phase"] == "final" for r in mrows)
            if trials or tuned_finals:
                if suite.tuning is None:
                    problems.append(
                        f"suite {name!r}, method {method!r}: tuned results but the suite has no tuning grid"
                    )
                    continue
                gaps = [
                    f"{t} lr {lr:g} seed {s}"
                    for t in tasks
                    for lr in suite.tuning.lr_grid
                    for s in suite.tuning.seeds
                    if not any(
                        tt == t and ss == s and tl is not None and math.isclose(tl, lr, rel_tol=1e-12)
                        for tt, tl, ss in trials
                    )
                ]
                if gaps:
                    missing.append(f"tuning trials (task, lr, seed): {', '.join(gaps)}")
                elif suite.tuning.extend_at_edge and not suite.tuning.curvature_centred and has_scores:
                    missing += _rates_past_an_edge(suite, mrows)
            if missing:
                problems.append(f"suite {name!r}, method {method!r}: missing " + "; missing ".join(missing))
    return problems


def _rates_past_an_edge(suite: Suite, rows: list[dict]) -> list[str]:
    """Per task, the rate ``tuning.extend_at_edge`` asks for next that the trial rows lack: the best
    trial rate is an edge of the rates tried and the limit is not reached (the sweep's rule,
    ``initbench.selection.tuning_grid.extension_wanted``), as 'task lr X (why)'."""
    from initbench.inputs.evaluation import task_primary_metric
    from initbench.selection.protocol import Selection, best_trial_rate, choose_lr
    from initbench.selection.tuning_grid import FIXED, TrialGrid, extension_wanted
    from initbench.spec.trust import suite_lm_eval_dir

    out = []
    for task in suite.tasks:
        metric, higher = task_primary_metric(task, suite.path, suite_lm_eval_dir(suite))
        scores: dict[float, list[float | None]] = defaultdict(list)  # trial rate -> score per tuning seed
        for r in rows:
            if r["phase"] == "trial" and r["task"] == task.name and r["learning_rate"] is not None:
                if r["status"] != "ok":
                    scores[r["learning_rate"]].append(None)
                elif r["metric"] == metric:
                    scores[r["learning_rate"]].append(r["value"])
        grid = TrialGrid(FIXED, list(suite.tuning.lr_grid))
        while True:
            selection = Selection("", task.name, metric, higher, {lr: _scores_at(scores, lr) for lr in grid.rates})
            choose_lr(selection, suite.budget.optimizer.lr)
            chosen = best_trial_rate(selection)
            wanted = extension_wanted(grid, chosen, suite.tuning.extend_at_edge)
            if wanted is None:
                break
            if not _scores_at(scores, wanted):
                out.append(
                    f"tuning trials past an edge: {task.name} lr {wanted:g} (the best trial rate {chosen:g} is an "
                    f"edge of the rates tried and the suite's tuning.extend_at_edge is "
                    f"{suite.tuning.extend_at_edge}; rerun the sweep with this initbench version)"
                )
                break
            grid = grid.with_rate(wanted)
    return out


def _scores_at(scores: dict[float, list[float | None]], lr: float) -> list[float | None]:
    """The trial scores recorded at rate ``lr`` (rates compared to twelve digits)."""
    return next((v for rate, v in scores.items() if math.isclose(rate, lr, rel_tol=1e-12)), [])


@functools.cache
def _suite(name: str, spec_hash: str) -> Suite | None:
    """The built-in suite ``name`` if its current spec hash is ``spec_hash`` (else None: the
    completeness check reports the mismatch)."""
    try:
        suite = load_builtin_suite(name)
    except SuiteError:
        return None
    return suite if suite.spec_hash == spec_hash else None


@functools.cache
def _method(name: str) -> tuple[Any, str]:
    """(the registered method, "") or (None, why it is not acceptable)."""
    from initbench.method.registry import PluginError, get_method

    if ":" in name:
        return None, f"method {name!r} is an import path, not a registered method: package it (CONTRIBUTING.md)"
    try:
        return get_method(name), ""
    except PluginError as err:
        return None, str(err)


@functools.cache
def _task_metrics(lm_eval_task: str) -> frozenset[str]:
    from initbench.inputs.evaluation import metric_keys

    return frozenset(metric_keys(lm_eval_task))


def check_rows(files: dict[Path, pa.Table]) -> list[str]:
    """Per file, what its rows claim that the suite they name does not allow (empty: nothing)."""
    problems = []
    for path, table in files.items():
        found: dict[str, None] = {}
        for row in table.to_pylist():
            suite = _suite(row["suite"], row["suite_hash"])
            if suite is None:
                continue  # not a built-in suite's current spec: check_contributed says so
            for problem in row_problems(suite, row):
                found.setdefault(problem)
        problems += [f"{path}: {problem}" for problem in found]
    return problems


def row_problems(suite: Suite, row: dict[str, Any]) -> list[str]:
    """What is wrong with one row against ``suite`` (the suite its spec hash names)."""
    from initbench.run.attach import lora_settings

    method, why = _method(row["method"])
    if method is None:
        return [why]
    task = next((t for t in suite.tasks if t.name == row["task"]), None)
    if task is None:
        return [
            f"task {row['task']!r} is not a task of suite {suite.name!r} ({', '.join(t.name for t in suite.tasks)})"
        ]
    out = []
    where = f"{row['method']} | {row['task']} | seed {row['seed']}"
    if row["status"] == "ok":
        out += _value_problems(task.lm_eval_task, row, where)
    out += _phase_problems(row, where)
    trains = method.trains
    lora = lora_settings(suite.lora, method)
    expected_rank = lora.rank if trains and method.attaches_lora else None
    if row["lora_rank"] != expected_rank:
        out.append(
            f"{where}: lora_rank {row['lora_rank']}, the suite grants {expected_rank} (lora.rank of {suite.path})"
        )
    out += _lr_problems(suite, row, where, trains)
    out += _budget_problems(suite, row, where, trains)
    for column, granted in (
        ("eval_batch_size", suite.eval.batch_size),
        ("eval_limit", suite.eval.limit),
        ("lm_eval_task", task.lm_eval_task),
    ):
        if row[column] != granted:
            out.append(f"{where}: {column} {row[column]!r}, the suite says {granted!r}")
    return out


def _value_problems(lm_eval_task: str, row: dict[str, Any], where: str) -> list[str]:
    metric, stderr = row["metric"], row["stderr"]  # the value itself: results.table_problems
    if metric is None:
        return [f"{where}: status ok with no metric"]
    out = []
    defined = _task_metrics(lm_eval_task)
    if metric not in defined:
        out.append(
            f"{where}: metric {metric!r} is not one task {lm_eval_task!r} defines ({', '.join(sorted(defined))})"
        )
    if stderr is not None and not (math.isfinite(stderr) and stderr >= 0):
        out.append(f"{where}: {metric} stderr {stderr!r}; a standard error is finite and >= 0")
    return out


def _phase_problems(row: dict[str, Any], where: str) -> list[str]:
    split = {"final": "test", "trial": "validation"}.get(row["phase"])
    if split is not None and row["eval_split"] != split:
        return [f"{where}: phase {row['phase']} scored on {row['eval_split']!r}; a {row['phase']} is scored on {split}"]
    return []


def _lr_problems(suite: Suite, row: dict[str, Any], where: str, trains: bool) -> list[str]:
    lr = row["learning_rate"]
    if not trains:
        return [] if lr is None else [f"{where}: learning_rate {lr!r} for a method that does not train"]
    grid = list(suite.tuning.lr_grid) if suite.tuning else []
    if grid and suite.tuning.extend_at_edge:  # rates tuning may add past an edge of the grid
        from initbench.selection.tuning_grid import reachable_rates

        grid = sorted(grid + reachable_rates(suite.tuning, grid))

    def same(a: float | None, b: float | None) -> bool:
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-12)

    if row["phase"] == "trial":
        ok = any(same(lr, g) for g in grid)
        granted = f"a rate of the suite's tuning grid {grid}"
    elif row["protocol"] == "tuned":
        ok = same(lr, row["selected_lr"]) and any(same(lr, g) for g in grid)
        granted = f"its selected_lr ({row['selected_lr']!r}), a rate of the tuning grid {grid}"
    else:
        ok = same(lr, suite.budget.optimizer.lr)
        granted = f"the suite's budget.optimizer.lr {suite.budget.optimizer.lr!r}"
    return [] if ok else [f"{where}: learning_rate {lr!r}, expected {granted}"]


def _budget_problems(suite: Suite, row: dict[str, Any], where: str, trains: bool) -> list[str]:
    """Budget spent = budget granted: every optimizer step of a finished run, no more tokens or
    calibration examples than allowed (a diverged run may stop early)."""
    problems = suite.budget.spent_problems(
        row["optimizer_steps"], row["train_tokens"], row["calibration_examples"], status=row["status"], trains=trains
    )
    return [f"{where}: {problem}" for problem in problems]
