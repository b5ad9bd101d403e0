"""Contamination: how much of each task's test (and validation) split is already in its training split.

What is compared: each record's ``prompt`` (the question as the model sees it), normalized --
Unicode NFKC, lower case, tokens = runs of letters and digits plus the arithmetic symbols
``+ - * / = < > % ^ $`` (other punctuation and whitespace dropped), so ``7+5=`` and ``7-5=`` stay
different while case, spacing, quotes and commas do not count.

Two measures per evaluated split:

* **exact**: records whose normalized prompt, followed for a multiple-choice record by its
  ``choices`` in sorted order, equals a training record's (the same question with the same
  options, shuffled, is a duplicate; the same stem with other options is not);
* **near**: exact duplicates, and records with at least ``NEAR_CONTAINMENT`` = 70% of their
  prompt's token ``NGRAM``-grams (8-grams) present among the training prompts' 8-grams
  (containment against the whole training split, the GPT-3/PaLM test).  A prompt shorter than
  8 tokens is near only if it is exact.

A suite whose near-duplicate share of any task's test or validation split exceeds
``SUITE_THRESHOLD`` = 1% is refused by ``initbench validate --contributed`` unless the suite
says why it is acceptable (top-level key ``contamination_ok: "reason"``; not part of the spec hash).

Every sweep records the report for the data it ran on in ``<out>/<suite>/contamination-<spec hash>.json``
(:func:`write_report`); ``python -m initbench.inputs.contamination SUITE [--data-dir DIR]`` prints it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from initbench.core import atomic
from initbench.spec.suite import Suite, TaskSpec

NGRAM = 8
NEAR_CONTAINMENT = 0.7
SUITE_THRESHOLD = 0.01
EVALUATED_SPLITS = ("test", "validation")
REPORT_PREFIX = "contamination-"

_TOKEN = re.compile(r"[^\W_]+|[+\-*/=<>%^$]")


def tokens(text: str) -> tuple[str, ...]:
    """The normalized tokens of ``text`` (see the module docstring)."""
    return tuple(_TOKEN.findall(unicodedata.normalize("NFKC", text).lower()))


def ngrams(toks: tuple[str, ...], n: int = NGRAM) -> set[int]:
    """Hashes of the token ``n``-grams of ``toks`` (none for a sequence shorter than ``n``)."""
    return {hash(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def record_key(record: dict[str, Any]) -> tuple[str, ...]:
    """The normalized tokens exact duplicates are found by: the prompt's, then the sorted choices'."""
    return tokens(record["prompt"]) + tuple(
        t for c in sorted(str(c) for c in record.get("choices") or []) for t in ("\0", *tokens(c))
    )


class TrainingIndex:
    """The exact keys and the prompt n-grams of a training split, built once and queried per record."""

    def __init__(self, records: Iterable[dict[str, Any]], n: int = NGRAM) -> None:
        self.n = n
        self.exact: set[tuple[str, ...]] = set()
        self.grams: set[int] = set()
        self.size = 0
        for record in records:
            self.size += 1
            self.exact.add(record_key(record))
            self.grams |= ngrams(tokens(record["prompt"]), n)

    def containment(self, record: dict[str, Any]) -> tuple[bool, float]:
        """(exact duplicate?, share of the record's prompt n-grams found among the training prompts')."""
        grams = ngrams(tokens(record["prompt"]), self.n)
        share = len(grams & self.grams) / len(grams) if grams else 0.0
        return record_key(record) in self.exact, share


@dataclass
class SplitOverlap:
    """Overlap of one evaluated split of one task with that task's training split."""

    task: str
    split: str
    records: int
    train_records: int
    exact: int
    near: int
    examples: list[str] = field(default_factory=list)  # up to three near-duplicate prompts
    data_hash: str = ""  # the task data's content hash (the runs' ``data_hash``)

    @property
    def near_fraction(self) -> float:
        return self.near / self.records if self.records else 0.0

    @property
    def exact_fraction(self) -> float:
        return self.exact / self.records if self.records else 0.0


@dataclass
class ContaminationReport:
    """Per task and evaluated split, the overlap with the training split; tasks whose data could not be read."""

    suite: str
    suite_hash: str
    overlaps: list[SplitOverlap]
    unchecked: dict[str, str]  # task -> why not (a hub-only split offline, a missing file)
    accepted: str = ""  # the suite's contamination_ok reason

    @property
    def worst(self) -> SplitOverlap | None:
        return max(self.overlaps, key=lambda o: o.near_fraction, default=None)

    def over_threshold(self, threshold: float = SUITE_THRESHOLD) -> list[SplitOverlap]:
        return [o for o in self.overlaps if o.near_fraction > threshold]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "suite_hash": self.suite_hash,
            "ngram": NGRAM,
            "near_containment": NEAR_CONTAINMENT,
            "threshold": SUITE_THRESHOLD,
            "accepted": self.accepted,
            "overlaps": [
                {**asdict(o), "exact_fraction": o.exact_fraction, "near_fraction": o.near_fraction}
                for o in self.overlaps
            ],
            "unchecked": self.unchecked,
        }

    def render(self) -> str:
        lines = [
            f"contamination of suite {self.suite!r} (spec {self.suite_hash}): test/validation prompts against "
            f"the task's training prompts; near = >= {NEAR_CONTAINMENT:.0%} of {NGRAM}-grams in training"
        ]
        for o in self.overlaps:
            lines.append(
                f"  {o.task} {o.split}: {o.records} records vs {o.train_records} training: exact {o.exact} "
                f"({o.exact_fraction:.1%}), near {o.near} ({o.near_fraction:.1%})"
            )
        lines += [f"  {task}: not checked: {why}" for task, why in self.unchecked.items()]
        return "\n".join(lines)


def split_overlap(task: str, split: str, index: TrainingIndex, evaluated: list[dict[str, Any]]) -> SplitOverlap:
    """The overlap of the ``evaluated`` records with the training split ``index`` was built from."""
    exact = near = 0
    examples = []
    for record in evaluated:
        same, share = index.containment(record)
        exact += same
        if same or share >= NEAR_CONTAINMENT:
            near += 1
            if len(examples) < 3:
                examples.append(record["prompt"][:200])
    return SplitOverlap(task, split, len(evaluated), index.size, exact, near, examples)


def contamination_report(
    suite: Suite, data_dir: Path | str | None = None, tasks: list[TaskSpec] | None = None
) -> ContaminationReport:
    """The overlap of every task's test and validation split with its training split, on the data
    ``data_dir`` (else the data directory in effect, else the hub) gives: the same records the runs
    read (``data.materialize``).  Seconds for thousands of records; one index per distinct training split."""
    from initbench.inputs.data import materialize
    from initbench.inputs.datasets_io import data_dir_in_effect

    overlaps, unchecked = [], {}
    indexes: dict[str, TrainingIndex] = {}
    with data_dir_in_effect(data_dir):
        for task in suite.tasks if tasks is None else tasks:
            try:
                data = materialize(task, suite.path)
            except Exception as err:  # hub-only offline, a missing file: say so, check the rest
                unchecked[task.name] = str(err).splitlines()[0][:300]
                continue
            key = hashlib.sha256(data.files["train"].read_bytes()).hexdigest()
            if key not in indexes:
                indexes[key] = TrainingIndex(data.records("train"))
            for split in EVALUATED_SPLITS:
                if split in data.files:
                    overlap = split_overlap(task.name, split, indexes[key], data.records(split))
                    overlap.data_hash = data.content_hash
                    overlaps.append(overlap)
    return ContaminationReport(suite.name, suite.spec_hash, overlaps, unchecked, suite.contamination_ok)


def report_path(out: Path, suite: Suite | str, spec_hash: str | None = None) -> Path:
    """Where a sweep records the contamination report of ``suite`` under ``out``."""
    name = suite if isinstance(suite, str) else suite.name
    spec_hash = spec_hash or suite.spec_hash
    return Path(out) / name / f"{REPORT_PREFIX}{spec_hash}.json"


def write_report(report: ContaminationReport, out: Path) -> Path:
    """Write ``report`` beside the suite's results (atomically)."""
    path = report_path(out, report.suite, report.suite_hash)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**report.to_dict(), "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return atomic.write_json(path, payload)


def refusal(suite: Suite, report: ContaminationReport) -> str | None:
    """Why ``validate --contributed`` refuses ``suite`` on ``report`` (None: it does not)."""
    over = report.over_threshold()
    if not over or suite.contamination_ok:
        return None
    shown = ", ".join(f"{o.task} {o.split} {o.near_fraction:.1%} ({o.near}/{o.records})" for o in over)
    return (
        f"{suite.path}: suite {suite.name!r}: test data overlaps its training data above {SUITE_THRESHOLD:.0%} "
        f"(near duplicates, >= {NEAR_CONTAINMENT:.0%} of {NGRAM}-grams): {shown}; fix the splits or say why "
        'it is acceptable with the suite key contamination_ok: "reason"'
    )


def check_results(results: Path, suites: Iterable[tuple[str, str]]) -> list[str]:
    """Problems for ``validate --contributed``: each built-in (suite, spec hash) of the results needs
    the contamination report a sweep writes beside them, and must not be over the threshold unless
    the suite says why."""
    from initbench.spec.suite import SuiteError, load_builtin_suite

    problems = []
    root = Path(results) if Path(results).is_dir() else Path(results).parent
    for name, spec_hash in sorted(set(suites)):
        try:
            suite = load_builtin_suite(name)  # a row's suite is a name, never a path
        except SuiteError:
            continue  # not a built-in suite: check_contributed says so
        if suite.spec_hash != spec_hash:
            continue  # check_contributed says so
        found = sorted(root.rglob(f"{REPORT_PREFIX}{spec_hash}.json"))
        if not found:
            problems.append(
                f"{root}: no {REPORT_PREFIX}{spec_hash}.json for suite {name!r}: the contamination "
                f"report a sweep writes beside its results (or: python -m initbench.inputs.contamination "
                f"{name} --data-dir DIR --out {root})"
            )
            continue
        try:
            report = _read_report(found[0])
        except (OSError, ValueError, KeyError, TypeError) as err:
            problems.append(
                f"{found[0]}: unreadable contamination report ({err}); rerun python -m "
                f"initbench.inputs.contamination {name} --out {root}"
            )
            continue
        why = refusal(suite, report)
        if why:
            problems.append(f"{found[0]}: {why}")
    return problems


def _read_report(path: Path) -> ContaminationReport:
    raw = json.loads(path.read_text())
    names = {f for f in SplitOverlap.__dataclass_fields__}
    overlaps = [SplitOverlap(**{k: v for k, v in o.items() if k in names}) for o in raw["overlaps"]]
    return ContaminationReport(
        raw["suite"], raw["suite_hash"], overlaps, dict(raw.get("unchecked") or {}), raw.get("accepted") or ""
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m initbench.inputs.contamination SUITE [--data-dir DIR] [--out RESULTS]``: print (and record) the report."""
    from initbench.spec.suite import SuiteError, load_suite

    parser = argparse.ArgumentParser(prog="python -m initbench.inputs.contamination", description=main.__doc__)
    parser.add_argument("suite")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="results folder to record the report in")
    args = parser.parse_args(argv)
    try:
        suite = load_suite(args.suite)
    except SuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = contamination_report(suite, args.data_dir)
    print(report.render())
    if args.out is not None:
        print(f"recorded in {write_report(report, args.out)}")
    why = refusal(suite, report)
    if why:
        print(why)
    elif report.over_threshold():
        print(f"over {SUITE_THRESHOLD:.0%}, accepted by the suite: {suite.contamination_ok}")
    return 1 if why else 0


if __name__ == "__main__":
    sys.exit(main())
