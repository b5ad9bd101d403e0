"""The ``initbench`` command line: methods, suites, evaluate, leaderboard, validate.

Exit codes: 0 ok; 1 some run failed (the others' results are written); 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from initbench import __version__


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as err:
        print(f"initbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("initbench: interrupted; finished runs are on disk, rerun to resume", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="initbench", description="Benchmark LoRA initialization methods.")
    parser.add_argument("--version", action="version", version=f"initbench {__version__}")
    sub = parser.add_subparsers(required=True, metavar="command")

    p = sub.add_parser("methods", help="list every registered init method")
    p.set_defaults(handler=cmd_methods)

    p = sub.add_parser("suites", help="list every built-in suite")
    p.set_defaults(handler=cmd_suites)

    p = sub.add_parser("evaluate", help="run methods on a suite and write Arrow results")
    p.add_argument("--suite", required=True, help="built-in suite name or path to a suite YAML")
    p.add_argument("--method", action="append", required=True, help="method name (repeat for several)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 (default 0)")
    p.add_argument("--out", type=Path, default=Path("initbench-runs"), help="results folder (default ./initbench-runs)")
    p.add_argument("--force", action="store_true", help="rerun runs already in --out")
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("leaderboard", help="print the table of the results under a folder")
    p.add_argument("results", type=Path)
    p.add_argument("--format", default="github", help="tabulate format (github, plain, latex, html, ...)")
    p.set_defaults(handler=cmd_leaderboard)

    p = sub.add_parser("validate", help="check results files against the schema")
    p.add_argument("results", type=Path)
    p.set_defaults(handler=cmd_validate)
    return parser


def cmd_methods(args: argparse.Namespace) -> int:
    from initbench.registry import describe_methods

    rows = [[m.name, f"{m.package} {m.version}", m.error or m.summary, m.paper] for m in describe_methods()]
    print(tabulate(rows, ["method", "package", "summary", "paper"], tablefmt="github"))
    return 0


def cmd_suites(args: argparse.Namespace) -> int:
    from initbench.suite import SuiteError, list_suites, load_suite

    rows = []
    for path in list_suites():
        try:
            s = load_suite(str(path))
        except SuiteError as err:
            rows.append([path.stem, f"invalid: {err}", "", ""])
            continue
        b = s.budget
        budget = f"{b.steps} steps x {b.batch_size} x <={b.max_length} tok, lr {b.optimizer.lr:g}, calib {b.calibration.examples} ex"
        rows.append([s.name, ", ".join(t.name for t in s.tasks), f"{s.model.source}:{s.model.id}", budget])
    print(tabulate(rows, ["suite", "tasks", "model", "budget"], tablefmt="github"))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from initbench.harness import run_grid
    from initbench.registry import PluginError, get_method
    from initbench.suite import SuiteError, load_suite

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if not seeds:
        raise UsageError("--seeds is empty")
    try:
        suite = load_suite(args.suite)
        methods = [get_method(name) for name in dict.fromkeys(args.method)]
    except (SuiteError, PluginError) as err:
        raise UsageError(str(err)) from None
    outcomes = run_grid(suite, methods, seeds, args.out, force=args.force, report=_report)
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"results in {args.out}; `initbench leaderboard {args.out}` shows the table", file=sys.stderr)
    for o in failed:
        print(f"initbench: run failed: {o.method} | {o.task} | seed {o.seed}: {o.error}", file=sys.stderr)
    return 1 if failed else 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from initbench.leaderboard import render

    if not args.results.exists():
        raise UsageError(f"{args.results}: no such file or folder")
    print(render(args.results, args.format))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from initbench.results import validate

    if not args.results.exists():
        raise UsageError(f"{args.results}: no such file or folder")
    problems = validate(args.results)
    for problem in problems:
        print(problem)
    print(f"{'invalid' if problems else 'valid'}: {args.results}", file=sys.stderr)
    return 1 if problems else 0


def _report(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
