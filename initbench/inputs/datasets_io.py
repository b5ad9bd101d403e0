"""Public data sets for a task: read each split from the hub (online) or from local copies
(offline), map raw rows to initbench records with a named formatter, and hash what was read.

A suite names a split's data like this (``DataSpec.splits``)::

    train:
      hub: {id: openai/gsm8k, config: main, split: train, revision: main, formatter: gsm8k}
      local: [{path: gsm8k/train.jsonl, formatter: gsm8k}]
      limit: 400                      # first N records after formatting, on either road

Where the data is read from (first that applies):

1. a data directory -- ``--data-dir`` on ``initbench evaluate`` (``use_data_dir``), else the
   environment variable ``INITBENCH_DATA_DIR``: every split is read from its ``local`` files
   under that folder and the hub is never contacted.  A split with no ``local`` entry
   (HellaSwag) makes its task unavailable offline (``offline_unavailable``; the CLI skips
   such tasks with a message), and a listed file that is missing is an error naming it.
2. otherwise the hub: ``datasets.load_dataset(id, config, split=split, revision=revision)``.

Records are JSON objects with ``prompt`` and ``completion`` (what training learns);
multiple-choice records also carry ``choices`` and ``label`` (what lm-eval scores by
log-likelihood, lm-eval's standard), and math records carry ``target``, the final answer
that lm-eval's exact match compares against.  The content hash covers the bytes actually
read (local files' bytes, or the hub rows as canonical JSON) and the records made from them.

Formatters (``initbench.spec.formatters``) take one raw row and return a record, or ``None`` to drop it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from initbench.spec.formatters import FORMATTERS, Record
from initbench.spec.suite import SplitSource, SuiteError

ENV_DATA_DIR = "INITBENCH_DATA_DIR"

_DATA_DIR_OPTION: Path | None = None  # set by `initbench evaluate --data-dir`


class DataUnavailable(SuiteError):
    """A split cannot be read in this setting (no local copy offline, or the hub unreachable)."""


# --------------------------------------------------------------------------- data directory


def use_data_dir(path: str | Path | None) -> None:
    """Set the data directory for this process (``--data-dir``); it takes precedence over
    ``$INITBENCH_DATA_DIR``.  ``None`` clears it."""
    global _DATA_DIR_OPTION
    _DATA_DIR_OPTION = Path(path).expanduser() if path else None


@contextlib.contextmanager
def data_dir_in_effect(path: str | Path | None) -> Iterator[None]:
    """Within the block, read from ``path`` as if given by ``--data-dir`` (``None``: leave the setting as is)."""
    global _DATA_DIR_OPTION
    before = _DATA_DIR_OPTION
    if path is not None:
        use_data_dir(path)
    try:
        yield
    finally:
        _DATA_DIR_OPTION = before


def data_dir() -> tuple[Path | None, str]:
    """The data directory in effect and how it was given (for messages):
    ``--data-dir`` beats ``$INITBENCH_DATA_DIR``; ``(None, "")`` means read from the hub."""
    if _DATA_DIR_OPTION is not None:
        return _DATA_DIR_OPTION, f"--data-dir {_DATA_DIR_OPTION}"
    env = os.environ.get(ENV_DATA_DIR, "").strip()
    if env:
        return Path(env).expanduser(), f"{ENV_DATA_DIR}={env}"
    return None, ""


# --------------------------------------------------------------------------- loading


def load_splits(
    splits: dict[str, SplitSource], key: str, where: str = "", directory: Path | None = None
) -> tuple[dict[str, list[Record]], str]:
    """Read and format every split; returns ``({split: records}, content_hash)``.

    ``key`` names the suite key for messages (``tasks.gsm8k.data.splits``); ``directory``
    overrides the data directory in effect (``data_dir()``)."""
    given = f"data directory {directory}" if directory is not None else ""
    if directory is None:
        directory, given = data_dir()
    digest = hashlib.sha256()
    records: dict[str, list[Record]] = {}
    for split in sorted(splits):
        source = splits[split]
        split_key = f"{key}.{split}"
        rows: list[Record] = []
        if directory is not None:
            if not source.local:
                hub = source.hub
                raise DataUnavailable(
                    f"{where}: key '{split_key}': no local copy of this split (hub only: "
                    f"{hub.id}@{hub.revision}) and {given} reads local files only; "
                    f"run without a data directory, online, to include it"
                )
            for i, local in enumerate(source.local):
                path = directory / local.path
                if not path.is_file():
                    raise DataUnavailable(
                        f"{where}: key '{split_key}.local[{i}].path': no local copy of {local.path} under "
                        f"{given} (looked for {path}); pass --data-dir (or set {ENV_DATA_DIR}) to a folder "
                        f"holding {local.path}, or run without one, online, to read it from the hub"
                    )
                raw = path.read_bytes()
                digest.update(f"{split}\0{local.path}\0".encode() + hashlib.sha256(raw).digest())
                rows += _format(
                    _parse(raw, path, f"{split_key}.local[{i}]", where), local.formatter, f"{where}: {path}"
                )
        else:
            hub = source.hub
            if hub is None:
                raise DataUnavailable(
                    f"{where}: key '{split_key}': this split has only local copies "
                    f"({', '.join(s.path for s in source.local)}) and no data directory was given; "
                    f"pass --data-dir (or set {ENV_DATA_DIR}) to the folder holding them"
                )
            raw_rows = load_hub_rows(
                hub.id,
                hub.revision,
                hub.config,
                hub.split,
                where=f"{where}: key '{split_key}.hub'",
                local=[s.path for s in source.local],
            )
            canonical = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in raw_rows).encode()
            digest.update(
                f"{split}\0{hub.id}@{hub.revision}/{hub.config}/{hub.split}\0".encode()
                + hashlib.sha256(canonical).digest()
            )
            rows = _format(raw_rows, hub.formatter, f"{where}: {hub.id}")
        if source.limit is not None:
            rows = rows[: source.limit]
        if not rows:
            raise SuiteError(f"{where}: key '{split_key}': no records after formatting")
        records[split] = rows
    return records, digest.hexdigest()


def load_hub_rows(
    dataset_id: str, revision: str, config: str, split: str, *, where: str = "", local: list[str] | None = None
) -> list[dict[str, Any]]:
    """One split of a hub data set at a pinned revision, as plain dicts (online users)."""
    import datasets

    try:
        dataset = datasets.load_dataset(dataset_id, config or None, split=split, revision=revision)
    except Exception as err:  # offline, unknown id or revision, ...
        copies = f" holding {', '.join(local)}" if local else ""
        raise DataUnavailable(
            f"{where}: could not load {dataset_id}@{revision} (config {config or 'default'}, split {split}) "
            f"from the hub ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            f"offline, pass --data-dir (or set {ENV_DATA_DIR}) to a folder{copies}"
        ) from err
    return [dict(row) for row in dataset]


NQ_OPEN_LOCAL = "nq_open/NQ-open.dev.jsonl"  # NQ-open's original dev split, under the data directory
LOCAL_SOURCE = "local:"  # how a source read from the data directory is named (``local:<path>``)
NQ_OPEN_HUB = "google-research-datasets/nq_open"  # splits "train" (87,925) and "validation" (the dev split)


def nq_open_questions(hub_split: str, who: str) -> tuple[list[str], str]:
    """NQ-open's questions in file order, and where they came from: with a data directory in effect,
    its local ``nq_open/NQ-open.dev.jsonl``; else the hub's ``hub_split``.  ``who`` names the caller in
    errors (a missing or malformed file names the file, the line and the fix)."""
    directory, given = data_dir()
    if directory is None:
        rows = load_hub_rows(
            NQ_OPEN_HUB, "main", "", hub_split, where=f"{who} (NQ-open questions)", local=[NQ_OPEN_LOCAL]
        )
        return [str(row["question"]) for row in rows], f"hub:{NQ_OPEN_HUB}@main/{hub_split}"
    path = Path(directory) / NQ_OPEN_LOCAL
    if not path.is_file():
        raise DataUnavailable(
            f"{who}: no NQ-open questions at {path} ({given}); put NQ-open's dev split there "
            f"as {NQ_OPEN_LOCAL} (JSON lines with a 'question' field), or run without a data "
            "directory, online, to read them from the hub"
        )
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            question = json.loads(line)["question"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataUnavailable(
                f"{who}: {path} line {number}: expected a JSON object with a 'question' field "
                f"({type(err).__name__}: {err}); fix or replace that line"
            ) from None
        questions.append(str(question))
    return questions, f"{LOCAL_SOURCE}{NQ_OPEN_LOCAL}"


def offline_unavailable(splits: dict[str, SplitSource]) -> str:
    """Why a task cannot run from a data directory ("" if it can): a split with no local copy."""
    hub_only = [f"{split} ({s.hub.id})" for split, s in sorted(splits.items()) if not s.local and s.hub]
    return f"no local copy of split {', '.join(hub_only)}; hub only" if hub_only else ""


def missing_local_files(splits: dict[str, SplitSource], directory: Path) -> list[str]:
    """The local paths a task lists that are not under ``directory``."""
    return [s.path for source in splits.values() for s in source.local if not (directory / s.path).is_file()]


def _parse(raw: bytes, path: Path, key: str, where: str) -> list[dict[str, Any]]:
    text = raw.decode("utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        raise SuiteError(
            f"{where}: key '{key}': {path} is not valid JSON{' lines' if path.suffix == '.jsonl' else ''}: {err}"
        ) from err
    if not isinstance(rows, list):
        raise SuiteError(f"{where}: key '{key}': {path} must hold a JSON list of rows (or be .jsonl)")
    return rows


def _format(rows: list[dict[str, Any]], name: str, where: str) -> list[Record]:
    if name in FORMATTERS:
        formatter = FORMATTERS[name]
    else:  # a suite's own formatter, module:function (checked when the suite loaded; imported only now)
        from initbench.spec.trust import load_function

        formatter = load_function(name, f"{where}: formatter")
    out = []
    for i, row in enumerate(rows):
        try:
            record = formatter(row)
        except (KeyError, ValueError, TypeError, IndexError) as err:
            raise SuiteError(f"{where}: row {i} does not fit formatter {name!r}: {type(err).__name__}: {err}") from err
        if record is not None:
            out.append(record)
    return out
