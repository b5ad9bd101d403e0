"""Deterministic task data that initbench generates itself (no download, same bytes everywhere).

Each generator returns ``{"train": [...], "validation": [...], "test": [...]}``;
the splits never share a question.  Records carry ``prompt`` and
``completion`` (what training learns); multiple-choice records also carry
``choices`` and ``label`` (what lm-eval scores by log-likelihood).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

Record = dict[str, Any]


def _split(make: Callable[[random.Random], Record], key: Callable[[Record], str], seed: int, sizes: dict[str, int]):
    """Draw unique records (by ``key``) and deal them into the splits in a fixed order."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[Record]] = {}
    for split, size in sizes.items():
        rows: list[Record] = []
        attempts = 0
        while len(rows) < size:
            attempts += 1
            if attempts > 100 * (size + 10):
                raise ValueError(f"cannot draw {size} unique {split} records; widen the generator's range")
            record = make(rng)
            if key(record) not in seen:
                seen.add(key(record))
                rows.append(record)
        splits[split] = rows
    return splits


def addition(digits: int = 3, n_train: int = 2000, n_validation: int = 200, n_test: int = 200, seed: int = 0):
    """``a+b=`` -> ``c`` with ``digits``-digit operands; scored by exact match of the generated sum."""
    low, high = 10 ** (digits - 1), 10**digits - 1

    def make(rng: random.Random) -> Record:
        a, b = rng.randint(low, high), rng.randint(low, high)
        return {"prompt": f"{a}+{b}=", "completion": str(a + b)}

    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    return _split(make, lambda r: r["prompt"], seed, sizes)


def compare_sums(digits: int = 2, n_train: int = 2000, n_validation: int = 200, n_test: int = 200, seed: int = 0):
    """``Which is larger: 47+38 or 52+29?`` -> the larger expression; two choices, scored by log-likelihood.

    Operands are ``digits``-digit numbers and the two sums differ, so chance is 50%.
    """
    low, high = 10 ** (digits - 1), 10**digits - 1

    def make(rng: random.Random) -> Record:
        while True:
            pairs = [(rng.randint(low, high), rng.randint(low, high)) for _ in range(2)]
            if sum(pairs[0]) != sum(pairs[1]):
                break
        choices = [f"{a}+{b}" for a, b in pairs]
        label = 0 if sum(pairs[0]) > sum(pairs[1]) else 1
        prompt = f"Which is larger: {choices[0]} or {choices[1]}? Answer:"
        return {"prompt": prompt, "completion": " " + choices[label], "choices": choices, "label": label}

    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    return _split(make, lambda r: r["prompt"], seed, sizes)
