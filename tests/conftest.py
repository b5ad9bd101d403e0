"""Shared fixtures: every test gets its own cache folder, so nothing leaks between tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Data is cheap to regenerate; one cache per session keeps the suite fast.
    cache = tmp_path_factory.getbasetemp() / "initbench-cache"
    monkeypatch.setenv("INITBENCH_CACHE", str(cache))
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def smoke_suite():
    from initbench.suite import load_suite

    return load_suite("smoke")


def write_suite(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env
