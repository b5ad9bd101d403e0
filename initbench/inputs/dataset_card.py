"""The dataset card of a published leaderboard version: the YAML front matter of its ``README.md``.

With it, the version folder is a Hugging Face dataset: ``datasets.load_dataset("leaderboard/v3")``
(the folder, offline, or the hub id it was pushed to) loads ``results.parquet`` (the default
config, ``results``); ``load_dataset(..., "curves")`` the training-loss curves and, where the version
has them, ``"curvature"`` the curvature measurements.  Each config has one split, ``train`` (the
hub's name for "all the rows"; the rows' ``phase`` column tells tuning trials from finals).  The
human README follows the front matter unchanged.
"""

from __future__ import annotations

import yaml

#: the license the card declares: initbench's own (pyproject.toml); the rows are its measurements
LICENSE = "apache-2.0"
TAGS = ["lora", "peft", "parameter-efficient-fine-tuning", "initialization", "leaderboard", "benchmark"]
TASK_CATEGORIES = ["text-generation"]  # what the evaluated models do; the rows are their scores
SPLIT = "train"


def size_category(rows: int) -> str:
    """The hub's size bucket for ``rows`` rows (``n<1K``, ``1K<n<10K``, ...)."""
    for bound, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if rows < bound:
            return name
    return "10M<n<100M" if rows < 100_000_000 else "n>100M"


def front_matter(version: str, tables: dict[str, str], rows: int) -> str:
    """The ``---``-fenced YAML card: ``tables`` maps each config name to its Parquet file (the first
    is the default), ``rows`` is the results' row count (the size category)."""
    card = {
        "pretty_name": f"initbench leaderboard {version}",
        "license": LICENSE,
        "tags": TAGS,
        "task_categories": TASK_CATEGORIES,
        "size_categories": [size_category(rows)],
        "configs": [
            {
                "config_name": name,
                "data_files": [{"split": SPLIT, "path": path}],
                **({"default": True} if i == 0 else {}),
            }
            for i, (name, path) in enumerate(tables.items())
        ],
    }
    return "---\n" + yaml.safe_dump(card, sort_keys=False, allow_unicode=True) + "---\n\n"
