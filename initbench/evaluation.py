"""The lm-eval bridge: score an in-memory model on a task YAML from ``tasks/lm_eval/``.

The task YAML is ordinary lm-eval (``dataset_path: json``); the bridge only
points its ``data_files`` at the task's materialized splits, so no hub is
touched.  Evaluation goes through ``lm_eval.simple_evaluate`` with every seed
pinned to the run's seed and the suite's batch size.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from initbench.data import TaskData
from initbench.suite import SuiteError, builtin_suite_dir


@dataclass(frozen=True)
class Score:
    metric: str  # lm-eval's metric key, with its filter when not "none" (e.g. "exact_match,flexible-extract")
    value: float
    stderr: float | None


def task_yaml_path(task_name: str) -> Path:
    path = builtin_suite_dir() / "lm_eval" / f"{task_name}.yaml"
    if not path.exists():
        raise SuiteError(f"no lm-eval task YAML for {task_name!r} at {path}")
    return path


def task_config(task_name: str, data: TaskData, split: str = "test") -> dict:
    """The lm-eval task config of ``task_name`` with its data files pointed at ``data``.

    ``split`` is what lm-eval scores (its ``test_split``).  Scoring any split other than
    ``test`` (a tuning trial on ``validation``) leaves the test file out of ``data_files``
    altogether, so lm-eval cannot even load it."""
    from lm_eval.tasks._yaml_loader import load_yaml

    if split not in data.files:
        raise SuiteError(f"task {task_name!r} has no {split!r} split to score (splits: {sorted(data.files)})")
    config = load_yaml(task_yaml_path(task_name))
    kwargs = dict(config.get("dataset_kwargs") or {})
    kwargs["data_files"] = {name: str(path) for name, path in data.files.items() if split == "test" or name != "test"}
    config["dataset_kwargs"] = kwargs
    if split != "test":
        config["test_split"] = split
        config.pop("validation_split", None)
        if config.get("fewshot_split") == "test":
            config.pop("fewshot_split")
    return config


@functools.lru_cache(maxsize=None)
def primary_metric(task_name: str) -> tuple[str, bool]:
    """The task's headline metric and whether higher is better: the first entry of its
    ``metric_list`` (what tuning selects on and what the normalized aggregate uses)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    metrics = load_yaml(task_yaml_path(task_name)).get("metric_list") or [{}]
    first = metrics[0]
    return str(first.get("metric", "")), bool(first.get("higher_is_better", True))


def task_metrics(task_name: str) -> list[str]:
    """Every metric name a run of the task records (``parse_scores``' names): each metric of its
    ``metric_list``, as ``metric,filter`` for each entry of a ``filter_list`` (plain for ``none``)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(task_yaml_path(task_name))
    metrics = [str(m.get("metric", "")) for m in config.get("metric_list") or []]
    filters = [str(f.get("name", "")) for f in config.get("filter_list") or []]
    return [m if f == "none" else f"{m},{f}" for m in metrics for f in filters or ["none"]]


@functools.lru_cache(maxsize=1)
def task_manager():
    """An lm-eval TaskManager over initbench's task folder only (indexing lm-eval's
    thousands of built-in YAMLs costs ~20 s per call and is not needed)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(builtin_suite_dir() / "lm_eval"), include_defaults=False)


def evaluate(
    model: torch.nn.Module, tokenizer, task_name: str, data: TaskData, *, batch_size: int, limit: int | None, seed: int,
    split: str = "test",
) -> tuple[list[Score], float]:
    """Run lm-eval on one task's ``split``; returns its scores and the wall seconds it took."""
    import datasets
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    start = time.perf_counter()
    datasets.disable_progress_bars()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    output = lm_eval.simple_evaluate(
        model=lm,
        tasks=[task_config(task_name, data, split)],
        task_manager=task_manager(),
        limit=limit,
        log_samples=False,
        bootstrap_iters=1000,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        verbosity="ERROR",
    )
    return parse_scores(output["results"][task_name]), time.perf_counter() - start


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
