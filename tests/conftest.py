"""Shared fixtures: the whole test session shares one cache folder of its own (never the user's
``INITBENCH_CACHE``), so nothing leaks into or out of the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # One cache per session, not per test: the embedded model is dequantized once, which keeps the suite fast.
    cache = tmp_path_factory.getbasetemp() / "initbench-cache"
    monkeypatch.setenv("INITBENCH_CACHE", str(cache))
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def smoke_suite():
    from initbench.spec.suite import load_suite

    return load_suite("smoke")


def write_suite(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def quick_smoke_suite(folder: Path, steps: int = 2, limit: int = 2) -> Path:
    """A copy of `smoke` cut to its first task, ``steps`` optimizer steps and ``limit`` eval
    examples, for end-to-end runs of many methods."""
    import yaml

    from initbench.spec.suite import builtin_suite_dir

    spec = yaml.safe_load((builtin_suite_dir() / "smoke.yaml").read_text())
    spec["tasks"] = spec["tasks"][:1]
    spec["budget"]["steps"] = steps
    spec["eval"]["limit"] = limit
    path = folder / "quick-smoke.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
