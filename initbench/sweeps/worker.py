"""A local worker: ``python -m initbench.sweeps.worker '<RunSpec JSON>'`` runs one run in this process.

The local executor starts one per run (``executors.worker_command``); the worker dies with its
driver (``executors.die_with_driver``).  A failure inside the run is recorded in its results file;
a nonzero exit means the process itself crashed.
"""

from __future__ import annotations

import sys

from initbench.sweeps.executors import die_with_driver
from initbench.sweeps.sweep import RunSpec, execute_run


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    die_with_driver()
    execute_run(RunSpec.from_json(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
