"""What the model said: the per-sample records of a final run's evaluation, beside its results.

lm-eval's ``log_samples`` records, per test document and filter, the prompt the model saw, what
it answered, the answer the task's filters extracted, the gold target and the document's
scores.  A final run (split ``test``; never a tuning trial) keeps them in a sidecar,
``<stem>.samples.parquet`` next to ``<stem>.results.parquet``, written atomically before the
results file (``results.write_atomic``), with the run id in its metadata so a sidecar copied
from another run is refused.  Keeping them changes no score (``tests/test_samples.py``).
``INITBENCH_SAMPLES=0`` (``--no-samples`` on ``evaluate`` and ``sweep``; workers inherit it)
keeps none.

One row per (document, filter):

- ``prompt``: the context the model was given (after the chat template when the suite applies it);
- ``output``: what the model said: the generation (``generate_until``) or, for multiple choice,
  the continuation with the highest log-likelihood; null for a scored continuation alone
  (teacher forcing), where ``loglikelihoods``/``greedy`` say how the gold continuation fared;
- ``answer``: the answer after the task's filters (the extracted number of GSM8K's
  ``strict-match``), or the chosen continuation;
- ``continuations``, ``loglikelihoods``, ``greedy``: the continuations scored by log-likelihood
  (each choice, or the gold completion), their log-likelihoods and whether greedy decoding
  reproduces them; empty for generation;
- ``target``: the gold target (for multiple choice, the gold choice's continuation);
- ``scores``: the document's metric values (JSON, e.g. ``{"exact_match": 1.0}``).
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from initbench.store.results import CURVE_SUFFIX, RESULTS_SUFFIX, ResultsError, first_line, write_atomic

SAMPLES_SUFFIX = ".samples.parquet"
SAMPLES_VERSION = "1"
SAMPLES_ENV = "INITBENCH_SAMPLES"

SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.int64(), nullable=False),
        pa.field("filter", pa.string()),
        pa.field("prompt", pa.string()),
        pa.field("output", pa.string()),
        pa.field("answer", pa.string()),
        pa.field("continuations", pa.list_(pa.string())),
        pa.field("loglikelihoods", pa.list_(pa.float64())),
        pa.field("greedy", pa.list_(pa.bool_())),
        pa.field("target", pa.string()),
        pa.field("scores", pa.string()),
    ]
)


class SamplesError(ResultsError):
    """A samples sidecar is unreadable, not a samples file, or belongs to another run."""


def enabled() -> bool:
    """Whether final runs keep their samples (``INITBENCH_SAMPLES``, default on)."""
    return os.environ.get(SAMPLES_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def run_file(run: Path, suffix: str) -> Path:
    """The file of a run ending in ``suffix``, found from any of its files (results, curve, samples) or its stem."""
    run = Path(run)
    for known in (RESULTS_SUFFIX, CURVE_SUFFIX, SAMPLES_SUFFIX):
        if run.name.endswith(known):
            return run.with_name(run.name[: -len(known)] + suffix)
    return run.with_name(run.name + suffix)


def samples_path(run: Path) -> Path:
    """The sidecar of a run, from any of its files or its stem."""
    return run_file(run, SAMPLES_SUFFIX)


def discard(stem: Path) -> None:
    """Remove a run's sidecar (before it is computed again: a rerun without samples leaves none stale)."""
    samples_path(stem).unlink(missing_ok=True)


def sink(stem: Path, run_id: str, split: str) -> Callable[[list[dict]], None] | None:
    """What the harness hands ``evaluation.evaluate`` as ``keep_samples``: writes a final run's
    sidecar; None for a tuning trial or when samples are off."""
    if split != "test" or not enabled():
        return None
    return lambda raw: write_samples(samples_path(stem), run_id, [record(sample) for sample in raw])


def write_samples(path: Path, run_id: str, records: list[dict[str, Any]]) -> Path:
    """Write ``records`` (:func:`record`'s) as the sidecar at ``path``, atomically, tagged with ``run_id``."""
    table = pa.Table.from_pylist(sorted(records, key=lambda r: r["doc_id"]), schema=SCHEMA)
    write_atomic(table, path, "samples", {"initbench.schema_version": SAMPLES_VERSION, "initbench.run_id": run_id})
    return path


def record(sample: dict[str, Any]) -> dict[str, Any]:
    """One lm-eval ``log_samples`` entry as a sidecar row (see the module docstring)."""
    requests = [list(args) for args in sample.get("arguments") or []]
    prompt = str(requests[0][0]) if requests and requests[0] else ""
    generation = bool(requests) and len(requests[0]) > 1 and isinstance(requests[0][1], dict)
    continuations = [] if generation else [str(r[1]) for r in requests if len(r) > 1]
    raw = [r[0] if isinstance(r, (list, tuple)) and r else r for r in sample.get("resps") or []]
    filtered = list(sample.get("filtered_resps") or [])
    row = {
        "doc_id": int(sample["doc_id"]),
        "filter": str(sample.get("filter", "none")),
        "prompt": prompt,
        "continuations": continuations,
        "loglikelihoods": [],
        "greedy": [],
        "output": None,
        "answer": None,
        "target": _target_text(sample.get("target"), continuations),
        "scores": json.dumps({m: sample.get(m) for m in sample.get("metrics") or []}, default=_plain),
    }
    if generation:
        row["output"] = _text(raw[0]) if raw else ""
        row["answer"] = _text(filtered[0]) if filtered else ""
        return row
    likelihoods = [_likelihood(response) for response in raw]
    row["loglikelihoods"], row["greedy"] = [ll for ll, _ in likelihoods], [g for _, g in likelihoods]
    if len(continuations) > 1:  # multiple choice: what the model picks
        row["output"] = continuations[_argmax(row["loglikelihoods"])]
        chosen = [_likelihood(f)[0] for f in filtered]
        row["answer"] = continuations[_argmax(chosen)] if len(chosen) == len(continuations) else _text(filtered)
    return row


def _likelihood(response: Any) -> tuple[float | None, bool | None]:
    """(log-likelihood, greedy) of a loglikelihood response ``(ll, is_greedy)`` or a rolling one (a number)."""
    if isinstance(response, (list, tuple)) and len(response) == 2:
        return _number(response[0]), bool(response[1])
    return _number(response), None


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _argmax(values: list[float | None]) -> int:
    scored = [(v if v is not None and not math.isnan(v) else -math.inf, i) for i, v in enumerate(values)]
    return max(scored, key=lambda item: (item[0], -item[1]))[1]


def _target_text(target: Any, continuations: list[str]) -> str:
    """The gold target as text; an index into the choices (multiple choice) as that choice's continuation."""
    is_index = isinstance(target, int) and not isinstance(target, bool)
    if is_index and len(continuations) > 1 and 0 <= target < len(continuations):
        return continuations[target]
    return _text(target)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=_plain)


def _plain(value: Any) -> Any:
    """JSON for what lm-eval may put in a sample beyond plain types (tuples, numpy numbers)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def read_samples(path: Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """The rows of the sidecar at ``path`` (every score parsed); a ``SamplesError`` naming the file
    when it is unreadable, not a samples file of a known version, or (``run_id``) another run's."""
    path = Path(path)
    fix = "rerun the run (`--force`) to write it again, or delete it"
    if not path.is_file():
        raise SamplesError(
            f"{path}: no samples file (a tuning trial, a run that failed or was made with --no-samples, "
            "or before samples were kept)"
        )
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise SamplesError(f"{path}: not a readable Parquet file ({first_line(err)}); {fix}") from None
    metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if metadata.get("initbench.table") != "samples":
        raise SamplesError(
            f"{path}: not an initbench samples file (metadata 'initbench.table' is "
            f"{metadata.get('initbench.table', 'missing')!r}); {fix}"
        )
    if metadata.get("initbench.schema_version") != SAMPLES_VERSION:
        raise SamplesError(
            f"{path}: samples schema version {metadata.get('initbench.schema_version', 'missing')}, "
            f"expected {SAMPLES_VERSION}; {fix}"
        )
    for field in SCHEMA:
        if field.name not in table.schema.names:
            raise SamplesError(f"{path}: missing column {field.name!r}; {fix}")
        if not table.schema.field(field.name).type.equals(field.type):
            raise SamplesError(
                f"{path}: column {field.name!r} is {table.schema.field(field.name).type}, expected {field.type}; {fix}"
            )
    if run_id is not None and metadata.get("initbench.run_id") != run_id:
        raise SamplesError(
            f"{path}: holds the samples of run {metadata.get('initbench.run_id', '(none named)')}, not "
            f"of {run_id} whose results it sits beside (copied or renamed from another run): delete it"
        )
    rows = table.select(SCHEMA.names).to_pylist()
    for row in rows:
        try:
            row["scores"] = json.loads(row["scores"] or "{}")
        except ValueError:
            raise SamplesError(f"{path}: document {row['doc_id']}: column 'scores' is not JSON; {fix}") from None
    return rows


def format_samples(rows: list[dict[str, Any]], count: int, width: int = 600) -> str:
    """The first ``count`` documents of a sidecar's rows as text: the prompt once, then per filter what
    the model said, the extracted answer, the gold target and the scores (long texts cut at ``width``)."""
    docs: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if row["doc_id"] in docs or len(docs) < count:
            docs.setdefault(row["doc_id"], []).append(row)
    blocks = []
    for doc_id, group in docs.items():
        first = group[0]
        lines = [f"document {doc_id}", "  prompt:", textwrap.indent(_cut(first["prompt"], width), "    | ")]
        if first["continuations"]:
            lines.append("  continuations (log-likelihood, greedy):")
            lines += [
                f"    {_cut(c, width)!r}: {_fmt(ll)}{'' if g is None else ', greedy' if g else ''}"
                for c, ll, g in zip(first["continuations"], first["loglikelihoods"], first["greedy"])
            ]
        lines.append(f"  target: {_cut(first['target'], width)!r}")
        for row in group:
            said = "" if row["output"] is None else f"output {_cut(row['output'], width)!r}; "
            answer = "" if row["answer"] is None else f"answer {_cut(row['answer'], width)!r}; "
            scores = ", ".join(f"{k}={_fmt(v)}" for k, v in row["scores"].items())
            lines.append(f"  [{row['filter']}] {said}{answer}{scores}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _cut(text: str | None, width: int) -> str:
    text = "" if text is None else text
    return text if len(text) <= width else f"{text[:width]}... ({len(text) - width} more characters)"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
