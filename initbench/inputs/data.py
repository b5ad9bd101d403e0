"""Task data: produce each split (generator, files, or public data sets through
``initbench.inputs.datasets_io``), write it where lm-eval reads it,
and turn the training split into deterministic, seeded batches.

A record is a JSON object with ``prompt`` and ``completion``; multiple-choice
records also carry ``choices`` and ``label``.  Training loss is taken on the
completion tokens only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from initbench.core import atomic
from initbench.spec.suite import SuiteError, TaskSpec
from initbench.spec.suite_base import beside_suite

SPLITS = ("train", "validation", "test")


def cache_dir() -> Path:
    """Where initbench caches models and materialized data (``$INITBENCH_CACHE``)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "initbench"
    return Path(os.environ.get("INITBENCH_CACHE", default))


@dataclass(frozen=True)
class TaskData:
    """A task's splits on disk (JSON lines) plus the hash of their content."""

    files: dict[str, Path]
    content_hash: str

    def records(self, split: str) -> list[dict[str, Any]]:
        with open(self.files[split]) as handle:
            return [json.loads(line) for line in handle if line.strip()]


def data_file(path: str, suite_path: str = "") -> Path:
    """A task's ``data.files`` entry as a path: ``~`` expanded, and a relative path taken relative to
    the folder of the suite file ``suite_path`` (so a suite and its data move together), not to the
    folder the command runs in."""
    return beside_suite(path, suite_path)


def materialize(task: TaskSpec, where: str = "") -> TaskData:
    """Write the task's splits as JSON lines under the cache (by content hash) and return them;
    ``where`` is the suite file (relative ``data.files`` paths resolve against its folder)."""
    if task.data.files:
        files = {split: data_file(path, where) for split, path in task.data.files.items()}
        for split, path in files.items():
            if not path.exists():
                raise SuiteError(f"{where}: key 'tasks.{task.name}.data.files.{split}': no file at {path}")
        digest = hashlib.sha256()
        for split in sorted(files):
            digest.update(split.encode() + files[split].read_bytes())
        return TaskData(files, digest.hexdigest()[:16])

    if task.data.splits:  # public data sets: hub or local copies (initbench.inputs.datasets_io)
        from initbench.inputs.datasets_io import load_splits

        splits, read_hash = load_splits(task.data.splits, f"tasks.{task.name}.data.splits", where)
    else:
        splits, read_hash = _call_generator(task, where), ""
    payload = {split: "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows) for split, rows in splits.items()}
    digest = hashlib.sha256((read_hash + "".join(f"{s}\n{payload[s]}" for s in sorted(payload))).encode()).hexdigest()[
        :16
    ]
    folder = cache_dir() / "data" / task.name / digest
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, text in payload.items():
        path = folder / f"{split}.jsonl"
        if not path.exists():
            atomic.write_text(path, text)
        files[split] = path
    return TaskData(files, digest)


def run_data(task: TaskSpec, where: str = "", split: str = "test") -> TaskData:
    """The data one run reads: the task materialized and, for a run scored on ``validation`` (a
    tuning trial), with its validation split (``with_validation``).  Its ``content_hash`` is the
    ``data_hash`` the run records and part of the run's key (``results.finished_status``)."""
    data = materialize(task, where)
    return data if split == "test" else with_validation(data)


def load_generator(task: TaskSpec, where: str, key: str = "") -> Callable[..., dict[str, list[dict[str, Any]]]]:
    """The task's generator function, imported only from a trusted module (``initbench.spec.trust``);
    ``key`` names it in errors (default ``tasks.<name>.data.generator``)."""
    from initbench.spec.trust import load_function

    return load_function(task.data.generator, f"{where}: key '{key or f'tasks.{task.name}.data.generator'}'")


def _call_generator(task: TaskSpec, where: str) -> dict[str, list[dict[str, Any]]]:
    function = load_generator(task, where)
    try:
        splits = function(**task.data.args)
    except TypeError as err:
        raise SuiteError(
            f"{where}: key 'tasks.{task.name}.data.args' does not fit {task.data.generator}: {err}"
        ) from err
    for split in ("train", "test"):
        if split not in splits:
            raise SuiteError(f"{where}: generator {task.data.generator} returned no {split!r} split")
    return splits


def tokenize_records(records: list[dict[str, Any]], tokenizer, max_length: int) -> list[dict[str, list[int]]]:
    """Tokenize prompt + completion; labels are -100 on the prompt.  Truncated to ``max_length``;
    an example left with no completion token is an error (it would train on nothing)."""
    examples = []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for record in records:
        prompt = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
        completion = tokenizer(record["completion"], add_special_tokens=False)["input_ids"] + eos
        ids = (prompt + completion)[:max_length]
        labels = ([-100] * len(prompt) + completion)[:max_length]
        if all(label == -100 for label in labels):
            raise ValueError(
                f"a training prompt of {len(prompt)} tokens leaves no completion token within "
                f"budget.max_length={max_length} ({record['prompt'][:40]!r}...); raise budget.max_length"
            )
        examples.append({"input_ids": ids, "labels": labels})
    return examples


def collate(examples: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of tokenized examples into a batch."""
    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.tensor(example["input_ids"])
        labels[row, :n] = torch.tensor(example["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def batches(
    examples: list[dict[str, list[int]]], batch_size: int, steps: int, seed: int, pad_id: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield exactly ``steps`` batches, reshuffling with a seeded generator at every epoch."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(examples), generator=generator).tolist()
        chosen, order = order[:batch_size], order[batch_size:]
        yield collate([examples[i] for i in chosen], pad_id)


VALIDATION_FRACTION = 0.1


def with_validation(data: TaskData) -> TaskData:
    """``data`` with a ``validation`` split for tuning trials (``initbench.selection.protocol``).

    A task that has one (the generators make one) is returned as is.  Otherwise (``files``
    or public data sets with train and test only) the validation split is carved out of the
    training split, deterministically and independent of order: the records whose SHA-256 of
    canonical JSON (``sort_keys``) is smallest, ``max(1, round(0.1 n))`` of them, and the
    training split of the result is the rest, so a trial never trains on what it is scored on.
    Final runs keep the full training split.  The test file is carried unchanged."""
    if "validation" in data.files:
        return data
    records = data.records("train")
    if len(records) < 2:
        raise ValueError(f"cannot carve a validation split from {len(records)} training record(s)")
    keyed = sorted(
        (hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest(), i) for i, r in enumerate(records)
    )
    held = {i for _, i in keyed[: max(1, round(VALIDATION_FRACTION * len(records)))]}
    digest = hashlib.sha256(f"{data.content_hash}/carved-validation/{VALIDATION_FRACTION}".encode()).hexdigest()[:16]
    folder = cache_dir() / "data" / "carved" / digest
    folder.mkdir(parents=True, exist_ok=True)
    files = dict(data.files)
    for split, rows in (
        ("train", [r for i, r in enumerate(records) if i not in held]),
        ("validation", [r for i, r in enumerate(records) if i in held]),
    ):
        path = folder / f"{split}.jsonl"
        if not path.exists():
            atomic.write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        files[split] = path
    return TaskData(files, digest)
