"""Atomic writes: a file appears complete or not at all.

Every file initbench writes for another process or a later session to read (results, curves,
selections, caches, materialized data) goes through :func:`replacing`: the content is written to a
hidden temporary file beside the target (``.<name>.tmp<pid>``, ignored by ``.gitignore`` and by
every reader), which then replaces the target with one ``os.replace``.  An error or a kill in
between leaves the target as it was and removes the temporary file (a kill -9 can leave one: it is
hidden, and the next write of the same process id replaces it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temporary_path(path: Path) -> Path:
    """The hidden temporary file beside ``path`` that this process writes before the rename."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on leaving the block it replaces ``path`` atomically, and on
    any error (or interrupt) it is removed and ``path`` is left untouched."""
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` at ``path`` atomically; returns ``path``."""
    with replacing(path) as tmp:
        tmp.write_text(text)
    return path


def write_json(path: Path, payload: Any) -> Path:
    """Write ``payload`` as indented, key-sorted JSON at ``path`` through a temporary file and a rename,
    so a reader never sees half a file (selections, plans, contamination reports, version records)."""
    return write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
