"""Formatters: one raw data-set row in, one initbench record out (or ``None`` to drop the row).

A record is a JSON object with ``prompt`` and ``completion`` (what training learns), plus
``choices``/``label`` for multiple-choice sets; suites name a formatter per split source
(``tasks.<t>.data.splits.<split>.local[i].formatter``), checked against :data:`FORMATTERS` when the
suite loads.  A suite may name a formatter of its own as ``module:function`` instead (a function
of one row, like these), imported under the same trust rule as generators (``initbench.spec.trust``:
``initbench_tasks`` or a module in ``$INITBENCH_ALLOW_MODULES``), so a new data set's formatter
lives beside its suite.  Reading the rows (local files, the hub) is ``initbench.inputs.datasets_io``'s job.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Record = dict[str, Any]
Formatter = Callable[[dict[str, Any]], "Record | None"]


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
    return {
        "prompt": _qa(row["question"]),
        "completion": " " + _CALCULATOR.sub("", answer).strip(),
        "target": number(answer.split("####")[-1]),
    }


def metamathqa(row: dict[str, Any]) -> Record:
    """meta-math/MetaMathQA (``query``, ``response`` ending ``The answer is: <x>``)."""
    response = row["response"].strip()
    return {
        "prompt": _qa(row["query"]),
        "completion": " " + response,
        "target": number(response.rsplit("The answer is:", 1)[-1]),
    }


def llm_adapters_math(row: dict[str, Any]) -> Record:
    """LLM-Adapters math fine-tuning sets (``instruction``, ``output`` = worked answer ending
    ``The answer is <x>.``, ``answer``); the leading ``A: `` of ``output`` is dropped."""
    output = row["output"].strip().removeprefix("A:").strip()
    return {
        "prompt": _qa(row["instruction"] + (" " + row["input"] if row.get("input") else "")),
        "completion": " " + output,
        "target": number(str(row["answer"])),
    }


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
    choices = [body[s + len(m) : e] for s, m, e in zip(starts, markers, ends)]
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
    return _mc(
        f"{row['context'].strip()} {row['question'].strip()}",
        [row["answerA"], row["answerB"], row["answerC"]],
        int(row["label"]) - 1,
    )


def ai2_arc(row: dict[str, Any]) -> Record:
    """allenai/ai2_arc (``question``, ``choices`` {text, label}, ``answerKey``)."""
    return _mc(row["question"], list(row["choices"]["text"]), list(row["choices"]["label"]).index(row["answerKey"]))


def openbookqa(row: dict[str, Any]) -> Record:
    """allenai/openbookqa ``main`` (``question_stem``, ``choices`` {text, label}, ``answerKey``)."""
    return _mc(
        row["question_stem"], list(row["choices"]["text"]), list(row["choices"]["label"]).index(row["answerKey"])
    )


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
