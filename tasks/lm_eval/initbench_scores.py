"""Continuous scores for initbench's generated tasks (lm-eval ``process_results`` hooks).

Exact match and accuracy flip whole answers on small numeric differences, so over seeds they are
noisy; these scores move smoothly with what the model learned:

- ``gold_prob``: the gold answer's per-character geometric-mean probability under teacher forcing,
  ``exp(loglikelihood(completion | prompt) / len(completion))``; for answers of digits, which the
  embedded SmolLM2 tokenizer splits one per token, this is the per-token geometric mean.
- ``greedy_match``: whether greedy decoding reproduces every gold token under teacher forcing
  (lm-eval's ``is_greedy``): exact match without sampling a generation.
- ``p_correct``: the probability mass the model puts on the correct choice among the choices,
  ``softmax(loglikelihoods)[label]``.
"""

from __future__ import annotations

import math


def gold_answer_scores(doc: dict, results: list[tuple[float, bool]]) -> dict[str, float]:
    """Scores of a ``loglikelihood`` request for the gold completion."""
    loglikelihood, is_greedy = results[0]
    length = max(len(doc["completion"]), 1)
    return {"gold_prob": math.exp(loglikelihood / length), "greedy_match": float(is_greedy)}


def choice_scores(doc: dict, results: list[tuple[float, bool]]) -> dict[str, float]:
    """Scores of a ``multiple_choice`` document from its choices' log-likelihoods."""
    lls = [ll for ll, _ in results]
    top = max(lls)
    weights = [math.exp(ll - top) for ll in lls]
    label = int(doc["label"])
    best = max(range(len(lls)), key=lls.__getitem__)
    return {"p_correct": weights[label] / sum(weights), "acc": float(best == label)}
