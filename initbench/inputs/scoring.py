"""Answer scoring for lm-eval tasks that compare a final number (``tasks/lm_eval/initbench_gsm8k.yaml``).

lm-eval's own ``exact_match`` compares strings, so a model that writes ``8.0`` against the gold
``8`` (or ``2/3`` against AddSub's gold ``0.6666666666666666``) is scored wrong.  :func:`exact_match`
is a drop-in replacement (same name, same keyword arguments, so the recorded metric keys stay
``exact_match,strict-match`` / ``exact_match,flexible-extract``): when both the prediction and the
gold parse as numbers they are compared as numbers, otherwise as strings exactly like lm-eval.

Parsing (:func:`parse_number`): a leading ``####`` answer marker, ``$`` signs, thousands commas and
one trailing period are dropped; what is left must be an integer, a decimal (``8``, ``-3.50``,
``.5``, ``1e3``) or a fraction of integers (``2/3``).  Two numbers match when
``math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)`` with ``REL_TOL = 1e-6`` and
``ABS_TOL = 1e-9``: ``0.666667`` matches ``0.6666666666666666``, ``0.67`` does not.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

REL_TOL = 1e-6
ABS_TOL = 1e-9

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_FRACTION = re.compile(r"([-+]?\d+)\s*/\s*(\d+)")


def parse_number(text: object) -> float | None:
    """The number ``text`` states (``"8.0"``, ``"1,000"``, ``"$5"``, ``"2/3"``, ``"#### 42."``), or None."""
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text) if math.isfinite(text) else None
    if not isinstance(text, str):
        return None
    s = text.rsplit("####", 1)[-1].strip().replace("$", "").replace(",", "").strip()
    if s.endswith("."):
        s = s[:-1]
    if _NUMBER.fullmatch(s):
        value = float(s)
        return value if math.isfinite(value) else None
    fraction = _FRACTION.fullmatch(s)
    if fraction and int(fraction.group(2)) != 0:
        return float(Fraction(int(fraction.group(1)), int(fraction.group(2))))
    return None


def numbers_match(prediction: object, reference: object) -> bool | None:
    """Whether two answers state the same number (within ``REL_TOL``/``ABS_TOL``); None if either is not one."""
    a, b = parse_number(prediction), parse_number(reference)
    if a is None or b is None:
        return None
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def exact_match(predictions: list[str], references: list[str], **kwargs) -> dict[str, float]:
    """lm-eval metric: the share of predictions equal to their reference, numerically where both are
    numbers, else as lm-eval's ``exact_match`` compares strings (``kwargs``: its ``regexes_to_ignore``,
    ``ignore_case``, ``ignore_punctuation``, ``ignore_numbers``)."""
    from lm_eval.api.metrics import exact_match_hf_evaluate

    if len(predictions) != len(references):
        raise ValueError(f"exact_match: {len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return {"exact_match": 0.0}
    scores = []
    for prediction, reference in zip(predictions, references):
        same = numbers_match(prediction, reference)
        if same is None:
            same = bool(exact_match_hf_evaluate([str(prediction)], [str(reference)], **kwargs)["exact_match"])
        scores.append(float(same))
    return {"exact_match": sum(scores) / len(scores)}
