"""What the suite loader, the suite file reader and the trust model share, and nothing else:
the error a bad suite raises and where suites and the files they name live.

Kept apart so that ``initbench.spec.suite`` may use ``initbench.spec.suite_file`` and ``initbench.spec.trust``
without either importing it back.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


class SuiteError(ValueError):
    """A suite file is missing, unreadable or does not match the schema."""


def builtin_suite_dir() -> Path:
    """The folder of suites shipped with initbench (``tasks/`` in the repository)."""
    return Path(str(resources.files("initbench_tasks")))


def beside_suite(path: str, suite_path: str = "") -> Path:
    """A path a suite names (a data file, a folder): ``~`` expanded, and a relative path taken relative
    to the folder of the suite file ``suite_path`` (so a suite and what it names move together), not to
    the folder the command runs in."""
    resolved = Path(path).expanduser()
    if not resolved.is_absolute() and suite_path and Path(suite_path).is_file():
        resolved = Path(suite_path).resolve().parent / resolved
    return resolved
