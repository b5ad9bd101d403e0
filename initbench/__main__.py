"""``python -m initbench ...``: the same command line as ``initbench ...``."""

from initbench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
