"""The lm-eval bridge: score an in-memory model on a task YAML from ``tasks/lm_eval/``
(or the suite's own ``lm_eval_include_path`` folder, or a folder in ``$INITBENCH_LM_EVAL_PATH``,
when the user trusts it; see ``initbench.spec.trust``).  ``folder`` arguments below are the suite's
own folder (``initbench.spec.trust.suite_lm_eval_dir``), None for a suite that names none.

The task YAML is ordinary lm-eval (``dataset_path: json``); the bridge only
points its ``data_files`` at the task's materialized splits, so no hub is
touched.  Evaluation goes through ``lm_eval.simple_evaluate`` with every seed
pinned to the run's seed and the suite's batch size.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from initbench.spec.suite import SuiteError, TaskSpec

if TYPE_CHECKING:  # the metric helpers (leaderboard, status) need neither torch nor the data layer
    import torch

    from initbench.inputs.data import TaskData


@dataclass(frozen=True)
class Score:
    metric: str  # lm-eval's metric key, with its filter when not "none" (e.g. "exact_match,flexible-extract")
    value: float
    stderr: float | None


def task_yaml_path(task_name: str, folder: Path | None = None) -> Path:
    """The task's YAML, from ``tasks/lm_eval``, the suite's ``folder`` or a folder in
    ``$INITBENCH_LM_EVAL_PATH`` only (``initbench.spec.trust``): a bare name, never a path."""
    from initbench.spec.trust import lm_eval_task_path

    return lm_eval_task_path(task_name, suite_folder=folder)


def load_task_yaml(task_name: str, folder: Path | None = None) -> dict:
    """The task's YAML as lm-eval's own loader reads it (``include:`` merged relative to the including
    file, ``!function`` imported), checked to declare ``task: <task_name>`` (initbench finds a task by
    its file name, lm-eval by that key, and reads its scores under it)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    path = task_yaml_path(task_name, folder)
    try:
        config = load_yaml(path)
    except Exception as err:  # bad YAML, a missing include, a !function that does not import
        raise SuiteError(f"{path}: lm-eval cannot read this task file: {type(err).__name__}: {err}") from None
    declared = config.get("task")
    if declared is None:
        raise SuiteError(
            f"{path}: no 'task:' key (a template other task files include?); lm_eval_task must name "
            f"a task file, one that sets task: {task_name}"
        )
    if declared != task_name:
        raise SuiteError(
            f"{path}: declares task: {declared!r}, not {task_name!r}; initbench finds a task by its "
            f"file name, so set task: {task_name} or rename the file {declared}.yaml"
        )
    return config


def task_config(task_name: str, data: TaskData, split: str = "test", folder: Path | None = None) -> dict:
    """The lm-eval task config of ``task_name`` with its data files pointed at ``data``.

    ``split`` is what lm-eval scores (its ``test_split``).  Scoring any split other than
    ``test`` (a tuning trial on ``validation``) leaves the test file out of ``data_files``
    altogether, so lm-eval cannot even load it."""
    if split not in data.files:
        raise SuiteError(f"task {task_name!r} has no {split!r} split to score (splits: {sorted(data.files)})")
    config = load_task_yaml(task_name, folder)
    kwargs = dict(config.get("dataset_kwargs") or {})
    kwargs["data_files"] = {name: str(path) for name, path in data.files.items() if split == "test" or name != "test"}
    config["dataset_kwargs"] = kwargs
    if split != "test":
        config["test_split"] = split
        config.pop("validation_split", None)
        if config.get("fewshot_split") == "test":
            config.pop("fewshot_split")
    return config


@functools.cache
def metric_keys(task_name: str, folder: Path | None = None) -> dict[str, bool]:
    """Every metric key the task records (``parse_scores``' names: the metric, with its filter when
    the filter is not ``none``), in the task YAML's order (metrics, then filters), and whether higher
    is better."""
    config = load_task_yaml(task_name, folder)
    filters = [str(f.get("name", "none")) for f in config.get("filter_list") or []] or ["none"]
    keys: dict[str, bool] = {}
    for entry in config.get("metric_list") or []:
        metric = entry.get("metric", "")
        metric = getattr(metric, "__name__", None) or str(metric)  # a `!function` metric is named by its function
        for name in filters:
            keys[metric if name == "none" else f"{metric},{name}"] = bool(entry.get("higher_is_better", True))
    return keys


def primary_metric(task_name: str, folder: Path | None = None) -> tuple[str, bool]:
    """The task's default primary metric and whether higher is better: the first metric of its
    ``metric_list`` under the first filter of its ``filter_list`` (``exact_match,strict-match`` for
    ``initbench_gsm8k``), as the results record it.  A suite overrides it per task with
    ``primary_metric`` (:func:`task_primary_metric`)."""
    keys = metric_keys(task_name, folder)
    return next(iter(keys.items())) if keys else ("", True)


def task_primary_metric(task: TaskSpec, where: str = "", folder: Path | None = None) -> tuple[str, bool]:
    """The primary metric of a suite's task: its ``primary_metric`` key if set (one of the keys its
    lm-eval task records, else a ``SuiteError`` naming the file, key and choices), else the default."""
    if not task.primary_metric:
        return primary_metric(task.lm_eval_task, folder)
    keys = metric_keys(task.lm_eval_task, folder)
    if task.primary_metric not in keys:
        raise SuiteError(
            f"{where}: key 'tasks.{task.name}.primary_metric' is {task.primary_metric!r}, not a metric "
            f"{task.lm_eval_task} records; one of {', '.join(keys)}"
        )
    return task.primary_metric, keys[task.primary_metric]


@functools.lru_cache(maxsize=4)
def task_manager(folder: Path | None = None):
    """An lm-eval TaskManager over initbench's task folders only (indexing lm-eval's
    thousands of built-in YAMLs costs ~20 s per call and is not needed)."""
    from lm_eval.tasks import TaskManager

    from initbench.spec.trust import lm_eval_dirs

    dirs = lm_eval_dirs(suite_folder=folder)
    return TaskManager(include_path=[str(d) for d in dirs if d.is_dir()], include_defaults=False)


def evaluate(
    model: torch.nn.Module,
    tokenizer,
    task_name: str,
    data: TaskData,
    *,
    batch_size: int,
    limit: int | None,
    seed: int,
    split: str = "test",
    chat_template: bool = False,
    keep_samples: Callable[[list[dict]], None] | None = None,
    folder: Path | None = None,
) -> tuple[list[Score], float]:
    """Run lm-eval on one task's ``split``; returns its scores and the wall seconds it took.

    ``chat_template`` puts every prompt through the tokenizer's chat template (lm-eval's
    ``apply_chat_template``, few-shot examples as turns).  ``keep_samples``, when given, receives
    lm-eval's per-sample records (``log_samples``; ``initbench.store.samples`` stores them): keeping them
    changes no score."""
    import datasets
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    if chat_template and not getattr(tokenizer, "chat_template", None):
        raise SuiteError(
            "the suite's eval.chat_template is true but the model's tokenizer has no chat template; "
            "set eval.chat_template: false, or use a model that has one"
        )
    start = time.perf_counter()
    datasets.disable_progress_bars()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    output = lm_eval.simple_evaluate(
        model=lm,
        tasks=[task_config(task_name, data, split, folder)],
        task_manager=task_manager(folder),
        limit=limit,
        log_samples=keep_samples is not None,
        bootstrap_iters=1000,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        verbosity="ERROR",
        **({"apply_chat_template": True, "fewshot_as_multiturn": True} if chat_template else {}),
    )
    seconds = time.perf_counter() - start
    if keep_samples is not None:
        keep_samples(output["samples"][task_name])
    return parse_scores(output["results"][task_name]), seconds


def parse_scores(task_results: dict) -> list[Score]:
    """Turn lm-eval's ``{"acc,none": x, "acc_stderr,none": s, ...}`` into Scores."""
    scores = []
    for key, value in sorted(task_results.items()):
        if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
            continue
        metric, _, filter_name = key.partition(",")
        stderr = task_results.get(f"{metric}_stderr,{filter_name}")
        name = metric if filter_name == "none" else key
        scores.append(Score(name, float(value), float(stderr) if isinstance(stderr, (int, float)) else None))
    return scores
