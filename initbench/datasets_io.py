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

Formatters (``FORMATTERS``) take one raw row and return a record, or ``None`` to drop it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from initbench.suite import SplitSource, SuiteError

ENV_DATA_DIR = "INITBENCH_DATA_DIR"
Record = dict[str, Any]
Formatter = Callable[[dict[str, Any]], "Record | None"]

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
                rows += _format(_parse(raw, path, f"{split_key}.local[{i}]", where), local.formatter,
                                f"{where}: {path}")
        else:
            hub = source.hub
            if hub is None:
                raise DataUnavailable(
                    f"{where}: key '{split_key}': this split has only local copies "
                    f"({', '.join(s.path for s in source.local)}) and no data directory was given; "
                    f"pass --data-dir (or set {ENV_DATA_DIR}) to the folder holding them"
                )
            raw_rows = load_hub_rows(hub.id, hub.revision, hub.config, hub.split, where=f"{where}: key '{split_key}.hub'",
                                     local=[s.path for s in source.local])
            canonical = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in raw_rows).encode()
            digest.update(f"{split}\0{hub.id}@{hub.revision}/{hub.config}/{hub.split}\0".encode()
                          + hashlib.sha256(canonical).digest())
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
NQ_OPEN_HUB = "google-research-datasets/nq_open"  # splits "train" (87,925) and "validation" (the dev split)


def nq_open_questions(hub_split: str, who: str) -> tuple[list[str], str]:
    """NQ-open's questions in file order, and where they came from: with a data directory in effect,
    its local ``nq_open/NQ-open.dev.jsonl``; else the hub's ``hub_split``.  ``who`` names the caller in
    errors (a missing or malformed file names the file, the line and the fix)."""
    directory, given = data_dir()
    if directory is None:
        rows = load_hub_rows(NQ_OPEN_HUB, "main", "", hub_split, where=f"{who} (NQ-open questions)",
                             local=[NQ_OPEN_LOCAL])
        return [str(row["question"]) for row in rows], f"hub:{NQ_OPEN_HUB}@main/{hub_split}"
    path = Path(directory) / NQ_OPEN_LOCAL
    if not path.is_file():
        raise DataUnavailable(f"{who}: no NQ-open questions at {path} ({given}); put NQ-open's dev split there "
                              f"as {NQ_OPEN_LOCAL} (JSON lines with a 'question' field), or run without a data "
                              "directory, online, to read them from the hub")
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            question = json.loads(line)["question"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataUnavailable(f"{who}: {path} line {number}: expected a JSON object with a 'question' field "
                                  f"({type(err).__name__}: {err}); fix or replace that line") from None
        questions.append(str(question))
    return questions, f"local:{NQ_OPEN_LOCAL}"


def offline_unavailable(splits: dict[str, SplitSource]) -> str:
    """Why a task cannot run from a data directory ("" if it can): a split with no local copy."""
    hub_only = [f"{split} ({s.hub.id})" for split, s in sorted(splits.items()) if not s.local and s.hub]
    return f"no local copy of split {', '.join(hub_only)}; hub only" if hub_only else ""


def missing_local_files(splits: dict[str, SplitSource], directory: Path) -> list[str]:
    """The local paths a task lists that are not under ``directory``."""
    return [s.path for source in splits.values() for s in source.local if not (directory / s.path).is_file()]


def check_splits(splits: dict[str, SplitSource], where: str, key: str) -> None:
    """Schema checks beyond types: known formatters, a source per split, a positive limit."""
    for split, source in splits.items():
        split_key = f"{key}.{split}"
        if source.hub is None and not source.local:
            raise SuiteError(f"{where}: key '{split_key}' must set 'hub', 'local' or both")
        named = ([(f"{split_key}.hub.formatter", source.hub.formatter)] if source.hub else []) + [
            (f"{split_key}.local[{i}].formatter", s.formatter) for i, s in enumerate(source.local)]
        for formatter_key, name in named:
            if name not in FORMATTERS:
                raise SuiteError(f"{where}: key '{formatter_key}': unknown formatter {name!r} "
                                 f"(known: {', '.join(sorted(FORMATTERS))})")
        if source.limit is not None and source.limit <= 0:
            raise SuiteError(f"{where}: key '{split_key}.limit' must be positive, got {source.limit}")
    if "test" not in splits:
        raise SuiteError(f"{where}: key '{key}' must name a 'test' split (lm-eval scores it)")


def _parse(raw: bytes, path: Path, key: str, where: str) -> list[dict[str, Any]]:
    text = raw.decode("utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        raise SuiteError(f"{where}: key '{key}': {path} is not valid JSON{' lines' if path.suffix == '.jsonl' else ''}: {err}")
    if not isinstance(rows, list):
        raise SuiteError(f"{where}: key '{key}': {path} must hold a JSON list of rows (or be .jsonl)")
    return rows


def _format(rows: list[dict[str, Any]], name: str, where: str) -> list[Record]:
    formatter = FORMATTERS[name]
    out = []
    for i, row in enumerate(rows):
        try:
            record = formatter(row)
        except (KeyError, ValueError, TypeError, IndexError) as err:
            raise SuiteError(f"{where}: row {i} does not fit formatter {name!r}: {type(err).__name__}: {err}") from err
        if record is not None:
            out.append(record)
    return out


# --------------------------------------------------------------------------- formatters
#
# One prompt shape for every set: "Question: ...\nAnswer:" (lm-eval's own gsm8k / arc
# style).  Completions start with a space; multiple-choice completions are the correct
# option's text, so training and log-likelihood scoring see the same continuation.


def _qa(question: str) -> str:
    return f"Question: {question.strip()}\nAnswer:"


def _mc(question: str, choices: list[str], label: int) -> Record:
    choices = [c.strip() for c in choices]
    if not 0 <= label < len(choices):
        raise ValueError(f"label {label} out of range for {len(choices)} choices")
    return {"prompt": _qa(question), "completion": " " + choices[label], "choices": choices, "label": label}


def number(text: str) -> str:
    """A final answer as GSM8K writes it: no thousands commas, ``4.0`` -> ``4``."""
    text = text.strip().replace(",", "")
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() else text


_CALCULATOR = re.compile(r"<<[^>]*>>")


def gsm8k(row: dict[str, Any]) -> Record:
    """openai/gsm8k (``question``, ``answer`` = worked solution ending ``#### <number>``).
    The calculator annotations ``<<48/2=24>>`` are dropped from the completion."""
    answer = row["answer"]
    if "####" not in answer:
        raise ValueError("answer has no '#### <number>' line")
    return {"prompt": _qa(row["question"]), "completion": " " + _CALCULATOR.sub("", answer).strip(),
            "target": number(answer.split("####")[-1])}


def metamathqa(row: dict[str, Any]) -> Record:
    """meta-math/MetaMathQA (``query``, ``response`` ending ``The answer is: <x>``)."""
    response = row["response"].strip()
    return {"prompt": _qa(row["query"]), "completion": " " + response,
            "target": number(response.rsplit("The answer is:", 1)[-1])}


def llm_adapters_math(row: dict[str, Any]) -> Record:
    """LLM-Adapters math fine-tuning sets (``instruction``, ``output`` = worked answer ending
    ``The answer is <x>.``, ``answer``); the leading ``A: `` of ``output`` is dropped."""
    output = row["output"].strip().removeprefix("A:").strip()
    return {"prompt": _qa(row["instruction"] + (" " + row["input"] if row.get("input") else "")),
            "completion": " " + output, "target": number(str(row["answer"]))}


_HEADER = re.compile(r"^Please (?:choose|answer) .*?(?:question|sentence): ", re.S)
_FORMAT = re.compile(r"\s*Answer format: ([\w/]+)\s*$")


def llm_adapters_commonsense(row: dict[str, Any]) -> Record:
    """LLM-Adapters commonsense sets (``instruction``, ``output``, ``answer``; BoolQ, PIQA,
    SIQA, HellaSwag, WinoGrande, ARC-e, ARC-c, OBQA and the 170k mixture of them).

    How the options are parsed out of the instruction text::

        Please choose the correct answer to the question: <question>\\n\\n
        Answer1: <text> Answer2: <text> ...\\n\\nAnswer format: answer1/answer2/...

    - the trailing ``Answer format: k1/k2/...`` gives the option keys (``answer1``,
      ``solution1``, ``option1``, ``ending1`` or ``true``/``false``);
    - the question is the text between the ``Please choose/answer ... question|sentence: ``
      header and the first option marker (``Answer1:``, ``Solution1:``, ``Option1:``,
      ``Ending1:``: the key capitalized, with a colon);
    - option i is the text between marker i and marker i+1 (or the format line);
    - BoolQ (keys ``true/false``) has no markers: the choices are ``true`` and ``false``;
    - the label is the index of ``answer`` among the keys.
    """
    text = row["instruction"].strip()
    found = _FORMAT.search(text)
    if not found:
        raise ValueError("instruction has no trailing 'Answer format: ...' line")
    keys = found.group(1).split("/")
    body = _HEADER.sub("", text[: found.start()], count=1).strip()
    answer = str(row["answer"]).strip()
    if answer not in keys:
        raise ValueError(f"answer {answer!r} is not one of the keys {keys}")
    if keys == ["true", "false"]:
        return _mc(body, keys, keys.index(answer))
    markers = [f"{key[0].upper()}{key[1:]}:" for key in keys]
    starts, at = [], 0
    for marker in markers:
        at = body.find(marker, at)
        if at < 0:
            raise ValueError(f"option marker {marker!r} not found in the instruction")
        starts.append(at)
    question = body[: starts[0]]
    ends = starts[1:] + [len(body)]
    choices = [body[s + len(m): e] for s, m, e in zip(starts, markers, ends)]
    if any(not c.strip() for c in choices):
        raise ValueError("an option is empty")
    return _mc(question, choices, keys.index(answer))


def boolq(row: dict[str, Any]) -> Record:
    """aps/super_glue ``boolq`` (``question``, ``label`` 1 = true).  The passage is left out,
    as in the LLM-Adapters copy, so hub and local records agree."""
    question = row["question"].strip()
    question += "" if question.endswith("?") else "?"
    return _mc(question, ["true", "false"], 0 if int(row["label"]) == 1 else 1)


def piqa(row: dict[str, Any]) -> Record:
    """baber/piqa (``goal``, ``sol1``, ``sol2``, ``label``)."""
    return _mc(row["goal"], [row["sol1"], row["sol2"]], int(row["label"]))


def siqa(row: dict[str, Any]) -> Record:
    """lighteval/siqa (``context``, ``question``, ``answerA..C``, ``label`` "1".."3")."""
    return _mc(f"{row['context'].strip()} {row['question'].strip()}",
               [row["answerA"], row["answerB"], row["answerC"]], int(row["label"]) - 1)


def ai2_arc(row: dict[str, Any]) -> Record:
    """allenai/ai2_arc (``question``, ``choices`` {text, label}, ``answerKey``)."""
    return _mc(row["question"], list(row["choices"]["text"]), list(row["choices"]["label"]).index(row["answerKey"]))


def openbookqa(row: dict[str, Any]) -> Record:
    """allenai/openbookqa ``main`` (``question_stem``, ``choices`` {text, label}, ``answerKey``)."""
    return _mc(row["question_stem"], list(row["choices"]["text"]), list(row["choices"]["label"]).index(row["answerKey"]))


def winogrande(row: dict[str, Any]) -> Record:
    """allenai/winogrande (``sentence`` with ``_``, ``option1``, ``option2``, ``answer`` "1"/"2")."""
    return _mc(row["sentence"], [row["option1"], row["option2"]], int(row["answer"]) - 1)


def _hellaswag_clean(text: str) -> str:  # lm-eval's hellaswag preprocessing
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag(row: dict[str, Any]) -> Record:
    """Rowan/hellaswag (``activity_label``, ``ctx_a``, ``ctx_b``, ``endings``, ``label``),
    cleaned as lm-eval's hellaswag task does."""
    context = _hellaswag_clean(f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}")
    return _mc(context, [_hellaswag_clean(e) for e in row["endings"]], int(row["label"]))


FORMATTERS: dict[str, Formatter] = {
    "gsm8k": gsm8k,
    "metamathqa": metamathqa,
    "llm_adapters_math": llm_adapters_math,
    "llm_adapters_commonsense": llm_adapters_commonsense,
    "boolq": boolq,
    "piqa": piqa,
    "siqa": siqa,
    "ai2_arc": ai2_arc,
    "openbookqa": openbookqa,
    "winogrande": winogrande,
    "hellaswag": hellaswag,
}
