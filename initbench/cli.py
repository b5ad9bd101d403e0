"""The ``initbench`` command line: methods, suites, check, evaluate, sweep, show, status, leaderboard, reproduce,
validate, export, model-path.

Exit codes: 0 ok; 1 some run failed (the others' results are written); 2 bad input.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from tabulate import tabulate

from initbench import __version__


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from initbench.store.results import ResultsError

    try:
        return args.handler(args)
    except (UsageError, ResultsError) as err:
        print(f"initbench: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:
            raise
        print(
            f"initbench: error: {err.filename or 'a results file'}: {err.strerror} while writing; everything "
            "finished before is on disk: free space (or fix permissions) and rerun the same command to resume "
            "(finished runs are skipped)",
            file=sys.stderr,
        )
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

    p = sub.add_parser(
        "check", help="preflight a suite: everything checkable before compute is spent (exit 2 on a problem)"
    )
    p.add_argument("suite", help="built-in suite name or path to a suite YAML")
    p.add_argument("--data-dir", type=Path, default=None, help="as for evaluate: check the local copies under it")
    p.set_defaults(handler=cmd_check)

    p = sub.add_parser("evaluate", help="run methods on a suite in this process and write Arrow results")
    _grid_arguments(p)
    p.set_defaults(handler=cmd_evaluate, executor="inline")

    p = sub.add_parser("sweep", help="like evaluate, each run in its own process or on a cluster (--executor)")
    _grid_arguments(p)
    p.add_argument(
        "--executor",
        default="local",
        help="local: one process per run, one after another (default); ray: one Ray task per run "
        "(--address); slurm: one SLURM job array through submitit; or the name of an executor a "
        "plugin registers (entry-point group initbench.sweeps.executors)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="ray: cluster address (auto, ray://host:port); default: a local cluster for this sweep",
    )
    p.add_argument("--partition", default=None, help="slurm: the partition")
    p.add_argument(
        "--slurm-cluster",
        default="slurm",
        choices=["slurm", "local"],
        help="slurm: 'local' runs the job array as local processes through submitit (testing)",
    )
    p.add_argument("--gpus-per-run", type=int, default=1, help="slurm: GPUs per job (default 1)")
    p.add_argument("--cpus-per-run", type=int, default=None, help="CPUs per run (ray default 1, slurm default 4)")
    p.add_argument("--timeout-min", type=int, default=240, help="slurm: time limit per job in minutes")
    # issue 13: parallel local workers, threads per run, and a plan before running
    p.add_argument("--workers", type=int, default=1, help="local: runs at a time, each its own process (default 1)")
    p.add_argument(
        "--threads-per-run",
        type=int,
        default=None,
        help="local: torch/OpenMP threads of each run (default: the cores divided by --workers; "
        "workers x threads may not exceed the cores)",
    )
    p.add_argument(
        "--plan", action="store_true", help="print the number of runs and an estimate of the machine-hours, run nothing"
    )
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("show", help="one run: its key columns, scores, and what the model said on N test documents")
    p.add_argument(
        "run",
        type=Path,
        metavar="RUN",
        help="a run's results file (or its curve or samples file, or their common stem)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=3,
        metavar="N",
        help="test documents to show from the run's samples (default 3; 0: none)",
    )
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("status", help="the grid of a results folder: done / failed / missing per suite and method")
    p.add_argument("results", type=Path)
    p.add_argument("--format", default="github", help="tabulate format")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser(
        "leaderboard",
        help="print the table of the results under a folder; "
        "`leaderboard publish RESULTS --version vN`; `leaderboard compare vA vB`",
        usage="initbench leaderboard RESULTS [--format F]\n"
        "       initbench leaderboard publish RESULTS --version vN [--root leaderboard] "
        "[--command CMD ...] [--incomplete]\n"
        "       initbench leaderboard compare vA vB [--root leaderboard]",
    )
    p.add_argument("results", nargs="+", metavar="RESULTS")
    p.add_argument("--format", default="github", help="tabulate format (github, plain, latex, html, ...)")
    p.add_argument("--version", dest="board_version", help="publish: the version folder to write, e.g. v1")
    p.add_argument("--root", type=Path, default=Path("leaderboard"), help="publish/compare: versions folder")
    p.add_argument(
        "--command",
        dest="commands",
        action="append",
        default=None,
        help="publish: a command that produced the results (repeat); default: reconstructed from the rows",
    )
    p.add_argument(
        "--incomplete",
        action="store_true",
        help="publish: although runs are missing or failed or validate --contributed finds problems "
        "(the manifest and the README say so); refused otherwise",
    )
    p.set_defaults(handler=cmd_leaderboard)

    p = sub.add_parser("reproduce", help="re-run K randomly drawn runs of a published version and compare values")
    p.add_argument("version_dir", type=Path, metavar="VERSION_DIR")
    p.add_argument("--runs", type=int, default=1, help="how many runs to redo (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draw (default 0)")
    p.add_argument(
        "--same-cpu",
        action="store_true",
        help="draw only among the runs computed on this machine's CPU (model, kernel flags), the only ones "
        "expected to match bit for bit; none: say so and exit 0 (CI's guard)",
    )
    p.set_defaults(handler=cmd_reproduce)

    p = sub.add_parser(
        "curvature",
        help="top Hessian eigenvalue of the training loss at init per method, task and "
        "seed (initbench.run.curvature), written beside the runs in --out",
    )
    p.add_argument("--suite", required=True, help="built-in suite name or path to a suite YAML")
    p.add_argument("--method", action="append", required=True, help="method name (repeat for several)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--out", type=Path, default=Path("initbench-runs"), help="results folder (default ./initbench-runs)")
    p.add_argument("--batches", type=int, default=4, help="training batches the loss is measured on (default 4)")
    p.add_argument("--iterations", type=int, default=20, help="at most this many Lanczos iterations (default 20)")
    p.add_argument("--tol", type=float, default=1e-2, help="stop when lambda_max changes less than this (default 0.01)")
    p.add_argument("--force", action="store_true", help="measure again what is already in --out")
    p.set_defaults(handler=cmd_curvature)

    p = sub.add_parser(
        "lr-prior",
        help="the learning rate each method's curvature predicts, calibrated on the "
        "reference's tuned rate, and the grid centred on it (initbench.selection.lr_prior)",
    )
    p.add_argument("--suite", required=True, help="built-in suite name or path to a suite YAML")
    p.add_argument("--method", action="append", required=True, help="method name (repeat for several)")
    p.add_argument(
        "--results",
        type=Path,
        default=Path("initbench-runs"),
        help="folder with the curvature measurements and the reference's tuning (default ./initbench-runs)",
    )
    p.add_argument(
        "--reference", default="lora", help="the method whose tuned rate calibrates the prior (default lora)"
    )
    p.add_argument("--points", type=int, default=None, help="grid size (default: the suite's tuning grid's)")
    p.set_defaults(handler=cmd_lr_prior)

    p = sub.add_parser("validate", help="check results files against the schema")
    p.add_argument("results", type=Path)
    p.add_argument(
        "--contributed",
        action="store_true",
        help="also require what the leaderboard requires of contributed results: a built-in suite's "
        "current spec hash, no missing seeds or tuning trials, every row possible under "
        "its suite (initbench.selection.contributed), and the suite's contamination report (written by "
        "every sweep) under 1%% near-duplicate test records unless the suite's contamination_ok "
        "says why",
    )
    p.set_defaults(handler=cmd_validate)

    # issue 16: adapters out (initbench.run.export, initbench.board.share)
    p = sub.add_parser(
        "export",
        help="copy a run's saved adapter into a folder stock peft and lm-eval load, with its "
        "lm-eval task, data and a README holding the exact lm_eval command",
    )
    p.add_argument("run_file", type=Path, metavar="RUN_FILE", help="the run's .results.parquet file")
    p.add_argument("--to", type=Path, default=None, metavar="DIR", help="the export folder (new or empty)")
    p.add_argument("--suite", default=None, help="the suite the run used, when not where it was (a path or name)")
    p.add_argument(
        "--push-to-hub",
        default=None,
        metavar="REPO",
        help="also upload the export folder to this Hugging Face hub model repository (needs a token)",
    )
    p.add_argument("--private", action="store_true", help="--push-to-hub: create the repository private")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser(
        "model-path",
        help="print the local Hugging Face folder of a suite's base model (pretrained=... for stock tools)",
    )
    p.add_argument("suite", help="built-in suite name or path to a suite YAML")
    p.set_defaults(handler=cmd_model_path)
    return parser


def cmd_export(args: argparse.Namespace) -> int:
    """``initbench export RUN_FILE --to DIR [--push-to-hub REPO]``."""
    import tempfile

    from initbench.board.share import ShareError, export_run, push

    if args.to is None and args.push_to_hub is None:
        raise UsageError("export: name the folder to write (--to DIR), or --push-to-hub REPO")
    target = args.to or Path(tempfile.mkdtemp(prefix="initbench-export-"))
    try:
        done = export_run(args.run_file, target, suite=args.suite)
        print(
            f"exported {done.record['run_id']} to {done.folder} ({done.record['export']['bytes'] / 2**20:.2f} MiB "
            f"saved by the run); README.md there holds the stock command:\n{done.command}"
        )
        if args.push_to_hub:
            print(f"pushed to {push(target, args.push_to_hub, private=args.private)}")
    except ShareError as err:
        raise UsageError(str(err)) from None
    finally:
        if args.to is None:
            import shutil

            shutil.rmtree(target, ignore_errors=True)
    return 0


def cmd_model_path(args: argparse.Namespace) -> int:
    """``initbench model-path SUITE``: the base model's local folder, written first for a tiny model."""
    from initbench.inputs.models import ModelError, model_folder
    from initbench.spec.suite import SuiteError, load_suite

    try:
        print(model_folder(load_suite(args.suite).model))
    except (SuiteError, ModelError) as err:
        raise UsageError(str(err)) from None
    return 0


def cmd_curvature(args: argparse.Namespace) -> int:
    """``initbench curvature``: measure (or skip, when present) each (method, task, seed)."""
    from initbench.method.registry import PluginError, get_method
    from initbench.run.curvature_table import NotMeasurable, measure_and_write
    from initbench.spec.suite import SuiteError, load_suite

    try:
        suite = load_suite(args.suite)
        methods = [get_method(name) for name in dict.fromkeys(args.method)]
    except (SuiteError, PluginError) as err:
        raise UsageError(str(err)) from None
    seeds = parse_seeds(args.seeds)
    failed = 0
    for method in methods:
        for task in suite.tasks:
            for seed in seeds:
                try:
                    row, measured = measure_and_write(
                        args.out,
                        suite,
                        method,
                        task,
                        seed,
                        force=args.force,
                        batches=args.batches,
                        max_iterations=args.iterations,
                        tol=args.tol,
                    )
                except (MemoryError, NotMeasurable) as err:  # no adapter, or too large for this machine: say so, go on
                    print(f"{method.name} | {task.name} | seed {seed}: not measured: {err}", file=sys.stderr)
                    failed += 1
                    continue
                state = "measured" if measured else "already there"
                print(
                    f"{method.name} | {task.name} | seed {seed}: lambda_max={row['lambda_max']:.4g} "
                    f"({row['iterations']} iterations, converged={row['converged']}, {row['seconds']:.0f} s; {state})"
                )
    return 1 if failed else 0


def cmd_lr_prior(args: argparse.Namespace) -> int:
    """``initbench lr-prior``: predicted rate and centred grid per method and task."""
    from initbench.selection.lr_prior import priors
    from initbench.spec.suite import load_suite

    try:
        suite = load_suite(args.suite)
        found = priors(args.results, suite, args.method, args.reference, args.points)
    except ValueError as err:  # a SuiteError too
        raise UsageError(str(err)) from None
    rows = [
        [
            p.method,
            p.task,
            f"{p.lambda_max:.4g}",
            f"{p.reference_lr:.3g} ({p.reference_lr_source})",
            f"{p.predicted_lr:.3g}",
            ", ".join(f"{lr:.3g}" for lr in p.grid),
        ]
        for p in found
    ]
    print(
        tabulate(
            rows,
            ["method", "task", "lambda_max", f"{args.reference} rate", "predicted rate", "centred grid"],
            tablefmt="github",
        )
    )
    return 0


def _grid_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments ``evaluate`` and ``sweep`` share: what to run and where the results go."""
    p.add_argument("--suite", required=True, help="built-in suite name or path to a suite YAML")
    p.add_argument("--method", action="append", required=True, help="method name (repeat for several)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 (default 0)")
    p.add_argument("--out", type=Path, default=Path("initbench-runs"), help="results folder (default ./initbench-runs)")
    p.add_argument("--force", action="store_true", help="rerun runs already in --out")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="read public data sets from local copies under this folder, never the hub "
        "(overrides $INITBENCH_DATA_DIR); tasks with no local copy are skipped",
    )
    p.add_argument(
        "--protocol",
        choices=["fixed", "tuned"],
        default="fixed",
        help="fixed: every method at the suite's learning rate (default); tuned: pick the rate per "
        "method and task from the suite's tuning grid on validation, then run it (and the default "
        "rate) on test (initbench.selection.protocol)",
    )
    # issue 13: the execution mode, recorded in every row's execution column (initbench.run.execution)
    p.add_argument(
        "--precision",
        choices=["float32", "bf16-autocast"],
        default=None,
        help="training precision (sets $INITBENCH_PRECISION; default: that, else bf16-autocast on CUDA "
        "and float32 on CPU)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="train through torch.compile (sets $INITBENCH_COMPILE=1; pays only for long runs: "
        "~97 s to compile per run for SmolLM2-135M on a CPU)",
    )
    # issue 16: what the model said (initbench.store.samples) and experiment trackers (initbench.sweeps.trackers)
    p.add_argument(
        "--no-samples",
        dest="samples",
        action="store_false",
        help="keep no per-sample records beside final runs (sets $INITBENCH_SAMPLES=0; default: keep "
        "them, <stem>.samples.parquet, shown by `initbench show RUN`)",
    )
    p.add_argument(
        "--report-to",
        nargs="+",
        default=["none"],
        metavar="TRACKER",
        help="log each run's loss curve, metadata and scores to wandb, trackio and/or tensorboard "
        "(several allowed; default none); needs the extra, e.g. pip install 'initbench[wandb]'",
    )
    p.add_argument(
        "--save-adapters",
        action="store_true",
        help="keep each final run's trained adapter beside its results file (<run>.adapter/, a plain "
        "peft LoRA on the original base model; full-ft: a full checkpoint); `initbench export` "
        "takes it from there (also the suite's save_adapters: true)",
    )


def cmd_methods(args: argparse.Namespace) -> int:
    from initbench.method.registry import describe_methods

    rows = [[m.name, f"{m.package} {m.version}", m.error or m.summary, m.paper] for m in describe_methods()]
    print(tabulate(rows, ["method", "package", "summary", "paper"], tablefmt="github"))
    return 0


def cmd_suites(args: argparse.Namespace) -> int:
    from initbench.spec.suite import SuiteError, list_suites, load_suite

    rows = []
    for path in list_suites():
        try:
            s = load_suite(str(path))
        except SuiteError as err:
            rows.append([path.stem, f"invalid: {err}", "", ""])
            continue
        b = s.budget
        budget = (
            f"{b.steps} steps x {b.batch_size} x <={b.max_length} tok (<={b.max_train_tokens:,} tokens), "
            f"lr {b.optimizer.lr:g}, calib {b.calibration.examples} ex"
            + (f", eval limit {s.eval.limit}" if s.eval.limit else "")
        )
        model = f"{s.model.source}:{s.model.id}" + (f"@{s.model.revision}" if s.model.source != "tiny" else "")
        rows.append([s.name, ", ".join(t.name for t in s.tasks), model, _data_summary(s), budget])
    print(tabulate(rows, ["suite", "tasks", "model", "data", "budget"], tablefmt="github"))
    return 0


def _data_summary(suite) -> str:
    """Where a suite's data comes from: hub ids (with the local copies read offline) or generators."""
    hub, local, other = {}, {}, {}
    for task in suite.tasks:
        data = task.data
        if data.generator:
            other[f"generated ({data.generator.partition(':')[0]})"] = None
        if data.files:
            other["files"] = None
        for source in data.splits.values():
            if source.hub:
                limit = f"[:{source.limit}]" if source.limit else ""
                name = source.hub.id + (f"[{source.hub.config}]" if source.hub.config else "")
                hub[f"{name}@{source.hub.revision}:{source.hub.split}{limit}"] = None
            for s in source.local:
                local[s.path] = None

    def listed(items: dict, most: int = 3) -> str:
        names = list(items)
        return ", ".join(names[:most]) + (f", ... (+{len(names) - most} more)" if len(names) > most else "")

    parts = [", ".join(other)] if other else []
    if hub:
        parts.append("hub: " + listed(hub))
    if local:
        parts.append("offline: " + listed(local))
    return "; ".join(parts)


EXECUTOR_OPTIONS = (
    "address",
    "partition",
    "slurm_cluster",
    "gpus_per_run",
    "cpus_per_run",
    "timeout_min",
    "workers",
    "threads_per_run",
)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``evaluate`` (every run in this process) and ``sweep`` (``--executor``)."""
    from initbench.method.registry import PluginError, get_method
    from initbench.selection.protocol import ProtocolError
    from initbench.spec.suite import SuiteError, load_suite
    from initbench.sweeps.executors import executor_names, make_executor
    from initbench.sweeps.sweep import run_sweep

    seeds = parse_seeds(args.seeds)
    try:
        suite = load_suite(args.suite)
        methods = [get_method(name) for name in dict.fromkeys(args.method)]
    except (SuiteError, PluginError) as err:
        raise UsageError(str(err)) from None
    if args.executor not in executor_names():  # before the preflight: a typo costs nothing
        raise UsageError(
            f"--executor {args.executor}: unknown; one of {', '.join(executor_names())} (a plugin adds "
            "one through the initbench.sweeps.executors entry-point group)"
        )
    tasks = _offline_tasks(suite, args.data_dir)
    _preflight(suite, tasks)  # bad input is exit 2 before anything is written
    if not getattr(args, "plan", False):  # a plan writes nothing, not even --out
        check_out(args.out)
    options = {k: getattr(args, k) for k in EXECUTOR_OPTIONS if hasattr(args, k)}  # sweep only
    _apply_execution_mode(args)
    trackers = _run_outputs(args)
    if getattr(args, "plan", False):
        from initbench.sweeps.planning import render_plan

        try:
            print(
                render_plan(
                    suite,
                    methods,
                    seeds,
                    args.out,
                    protocol=args.protocol,
                    tasks=tasks,
                    workers=args.workers if args.executor == "local" else 1,
                )
            )
        except ProtocolError as err:  # a curvature-centred grid without its inputs
            raise UsageError(str(err)) from None
        return 0
    try:
        executor = make_executor(args.executor, out=args.out, **options)
    except PluginError as err:
        raise UsageError(str(err)) from None
    if trackers:
        from initbench.sweeps.trackers import TrackedExecutor, make_trackers

        executor = TrackedExecutor(executor, suite, make_trackers(trackers, args.out))
    try:
        outcomes = run_sweep(
            suite,
            methods,
            seeds,
            args.out,
            executor,
            protocol=args.protocol,
            tasks=tasks,
            data_dir=_resolved_data_dir(),
            force=args.force,
            report=_report,
            save_adapters=args.save_adapters,
        )
    except ProtocolError as err:
        raise UsageError(str(err)) from None
    if args.save_adapters or suite.save_adapters:
        _report_unsaved(outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"results in {args.out}; `initbench leaderboard {args.out}` shows the table", file=sys.stderr)
    for o in failed:
        print(f"initbench: run failed: {o.method} | {o.task} | seed {o.seed}: {o.error}", file=sys.stderr)
    if failed:
        from initbench.run.harness import DEBUG_ENV, debug_enabled

        if not debug_enabled():
            print(f"initbench: {DEBUG_ENV}=1 prints each failed run's traceback", file=sys.stderr)
    claimed = [o for o in outcomes if o.status == "claimed"]
    if claimed:
        print(
            f"initbench: {len(claimed)} run(s) left to the process computing them ({claimed[0].error}); "
            "`initbench status` shows when they are done",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _report_unsaved(outcomes) -> None:
    """One line on stderr when final runs skipped as finished have no saved adapter."""
    from initbench.run.export import unsaved_finals

    missing = unsaved_finals([o.path for o in outcomes if o.status == "skipped" and o.path is not None])
    if missing:
        print(
            f"initbench: {len(missing)} final run(s) finished before adapters were saved have none (e.g. "
            f"{missing[0]}); rerun with --save-adapters --force to save them",
            file=sys.stderr,
        )


def cmd_check(args: argparse.Namespace) -> int:
    """``initbench check SUITE``: every problem of the preflight, one per line; exit 2 if any."""
    from initbench.inputs.preflight import check_suite
    from initbench.spec.suite import SuiteError, load_suite

    try:
        suite = load_suite(args.suite)
    except SuiteError as err:
        raise UsageError(str(err)) from None
    tasks = _offline_tasks(suite, args.data_dir)
    problems = check_suite(suite, tasks, note=_report)
    for problem in problems:
        print(f"initbench: error: {problem}", file=sys.stderr)
    if problems:
        return 2
    print(f"ok: suite {suite.name!r} ({suite.path}): {len(tasks or suite.tasks)} task(s) pass the preflight")
    _report_contamination(suite, tasks)
    return 0


def _report_contamination(suite, tasks) -> None:
    """Print the overlap of each task's test and validation prompts with its training prompts (a
    report, not an error: ``validate --contributed`` is what refuses a suite above the threshold)."""
    from initbench.inputs.contamination import contamination_report, refusal

    report = contamination_report(suite, tasks=tasks)
    print(report.render())
    why = refusal(suite, report)
    if why:
        print(f"warning: {why}")
    elif report.over_threshold():
        print(f"over the threshold, accepted by the suite: {suite.contamination_ok}")


def _preflight(suite, tasks) -> None:
    """The preflight before the first run of ``evaluate`` / ``sweep``: bad input is exit 2."""
    from initbench.inputs.preflight import check_suite

    problems = check_suite(suite, tasks, note=_report)
    if problems:
        more = (
            f" (and {len(problems) - 1} more; `initbench check {suite.path}` lists them)" if len(problems) > 1 else ""
        )
        raise UsageError(problems[0] + more)


#: a seed is what numpy, torch and lm-eval all take: an unsigned 32-bit integer
MAX_SEED = 2**32 - 1
#: OS errors that mean the results folder cannot take more writes (full, over quota, read-only, denied,
#: a write cut short)
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


def parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,2`` as integers in [0, MAX_SEED]; anything else is a UsageError."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise UsageError("--seeds is empty")
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise UsageError(f"--seeds {text}: {bad[0]} is out of range; a seed is an integer from 0 to {MAX_SEED}")
    return list(dict.fromkeys(seeds))


def check_out(out: Path) -> None:
    """``--out`` must be a folder this process can create and write in; checked before any run."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder; name a folder for the results")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".initbench-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"--out {out}: cannot write there ({err.strerror or err}); name a writable folder") from None


def _apply_execution_mode(args: argparse.Namespace) -> None:
    """Put ``--precision``/``--compile`` into the environment every worker inherits, and check the
    execution settings (from flags or environment) before any run starts."""
    from initbench.core.seeding import pick_device
    from initbench.run.execution import (
        COMPILE_ENV,
        PRECISION_ENV,
        ExecutionError,
        bf16_warning,
        compile_enabled,
        init_reuse_enabled,
        worker_threads,
    )

    if args.precision is not None:
        os.environ[PRECISION_ENV] = args.precision
    if args.compile:
        os.environ[COMPILE_ENV] = "1"
    try:
        warning = bf16_warning(pick_device())
        compile_enabled(), init_reuse_enabled()
        if getattr(args, "executor", None) == "local":
            worker_threads(args.workers, args.threads_per_run)
        elif getattr(args, "workers", 1) != 1 or getattr(args, "threads_per_run", None) is not None:
            raise UsageError("--workers and --threads-per-run apply to --executor local only")
    except ExecutionError as err:
        raise UsageError(str(err)) from None
    if warning:
        print(f"initbench: warning: {warning}", file=sys.stderr)


def _run_outputs(args: argparse.Namespace) -> list[str]:
    """``--no-samples`` into the environment every worker inherits, and the ``--report-to`` trackers,
    each checked installed before any run starts (a missing one is exit 2 naming its extra)."""
    from initbench.store.samples import SAMPLES_ENV
    from initbench.sweeps.trackers import TrackerError, check_installed, parse_report_to

    if not args.samples:
        os.environ[SAMPLES_ENV] = "0"
    try:
        trackers = parse_report_to(args.report_to)
        check_installed(trackers)
    except TrackerError as err:
        raise UsageError(str(err)) from None
    return trackers


def _resolved_data_dir() -> Path | None:
    """The data directory in force (after ``_offline_tasks``), absolute, for workers elsewhere."""
    from initbench.inputs.datasets_io import data_dir

    directory, _ = data_dir()
    return None if directory is None else directory.resolve()


def _offline_tasks(suite, option: Path | None):
    """With a data directory (``--data-dir``, else ``$INITBENCH_DATA_DIR``): the suite's tasks
    that can run from it.  Tasks whose data is hub only are skipped with a message; a listed
    local file that is missing is bad input (exit 2).  Without one: every task (hub)."""
    from initbench.inputs.datasets_io import data_dir, missing_local_files, offline_unavailable, use_data_dir

    if option is not None:
        if not option.is_dir():
            raise UsageError(f"--data-dir {option}: no such folder")
        use_data_dir(option)
    directory, given = data_dir()
    if directory is None:
        return None
    if not directory.is_dir():
        raise UsageError(f"{given}: no such folder")
    tasks = []
    for i, task in enumerate(suite.tasks):
        if not task.data.splits:
            tasks.append(task)
            continue
        missing = missing_local_files(task.data.splits, directory)
        if missing:
            raise UsageError(
                f"{suite.path}: key 'tasks[{i}].data' ({task.name}): no local copy of "
                f"{', '.join(missing)} under {given}; pass --data-dir (or set "
                f"INITBENCH_DATA_DIR) to a folder holding {'them' if len(missing) > 1 else 'it'}, "
                f"or run online without one"
            )
        reason = offline_unavailable(task.data.splits)
        if reason:
            print(
                f"initbench: skipping task {task.name!r} offline ({given}): {reason}; "
                f"run without a data directory, online, to include it",
                file=sys.stderr,
            )
            continue
        tasks.append(task)
    if not tasks:
        raise UsageError(f"{suite.path}: no task of suite {suite.name!r} can run from {given}")
    return tasks


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from initbench.board.leaderboard_text import render

    first = args.results[0]
    if first in ("publish", "compare") and not (len(args.results) == 1 and Path(first).exists()):
        from initbench.board.compare import compare
        from initbench.board.publish import PublishError, publish

        try:
            if first == "publish":
                if len(args.results) != 2 or not args.board_version:
                    raise UsageError("usage: initbench leaderboard publish RESULTS --version vN [--root DIR]")
                target = publish(
                    Path(args.results[1]),
                    args.board_version,
                    root=args.root,
                    commands=args.commands,
                    incomplete=args.incomplete,
                )
                print(f"published {target}", file=sys.stderr)
            else:
                if len(args.results) != 3:
                    raise UsageError("usage: initbench leaderboard compare vA vB [--root DIR]")
                print(compare(args.results[1], args.results[2], root=args.root, fmt=args.format))
        except PublishError as err:
            raise UsageError(str(err)) from None
        return 0
    if len(args.results) != 1:
        raise UsageError(f"leaderboard takes one results folder, got {' '.join(args.results)}")
    results = Path(first)
    if not results.exists():
        raise UsageError(f"{results}: no such file or folder")
    from initbench.board.publish import PublishError, is_version, read_version

    version = results if is_version(results) else results.parent if is_version(results.parent) else None
    if version is None:
        print(render(results, args.format))
        _report_set_aside(results)
        return 0
    from initbench.board.leaderboard import build
    from initbench.board.leaderboard_text import render_board, render_edges
    from initbench.board.publish import read_curvature

    try:
        table, curves = read_version(version)  # a published version: every file checked against its hash
        curvature, edges = read_curvature(version)
    except PublishError as err:
        raise UsageError(str(err)) from None
    print(
        render_board(build(table, curves, curvature), args.format)
        + ("\n\n" + render_edges(edges, args.format) if edges else "")
    )
    return 0


def _report_set_aside(results: Path) -> None:
    """One line on stderr when tuned finals under ``results`` were set aside (not counted)."""
    from initbench.selection.protocol import superseded

    stale = superseded(results) if results.is_dir() else {}
    if stale:
        print(
            f"initbench: {len(stale)} tuned final(s) superseded by a later selection set aside (kept, not "
            f"counted); `initbench status {results}` lists them",
            file=sys.stderr,
        )


def cmd_show(args: argparse.Namespace) -> int:
    """``initbench show RUN [--samples N]``: a run's key columns, scores and N documents of its samples."""
    from initbench.store.show import render_run

    if args.samples < 0:
        raise UsageError(f"--samples {args.samples}: a number of documents, 0 or more")
    print(render_run(args.run, args.samples))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from initbench.selection.status import grid_status, render_status

    if not args.results.is_dir():
        raise UsageError(f"{args.results}: no such folder")
    status = grid_status(args.results)
    print(render_status(status, args.format))
    return 0 if status.complete else 1


def cmd_reproduce(args: argparse.Namespace) -> int:
    from initbench.board.publish import PublishError
    from initbench.board.reproduce import reproduce

    try:
        report, all_match = reproduce(args.version_dir, runs=args.runs, seed=args.seed, same_cpu=args.same_cpu)
    except PublishError as err:
        raise UsageError(str(err)) from None
    print(report)
    return 0 if all_match else 1


def cmd_validate(args: argparse.Namespace) -> int:
    from initbench.store.results import validate

    if not args.results.exists():
        raise UsageError(f"{args.results}: no such file or folder")
    problems = validate(args.results)
    if not problems and args.contributed:
        import pyarrow as pa

        from initbench.inputs.contamination import check_results
        from initbench.selection.contributed import check_contributed, check_rows
        from initbench.selection.protocol import stale_selections, superseded
        from initbench.store.results import read_tree, without_runs

        stale = superseded(args.results) if args.results.is_dir() else {}
        for reason in stale.values():
            print(f"initbench: set aside (not counted): {reason}", file=sys.stderr)
        files = {path: without_runs(table, stale) for path, table in read_tree(args.results).items()}
        table = pa.concat_tables(files.values())
        problems = check_contributed(table) + check_rows(files)
        problems += stale_selections(args.results) if args.results.is_dir() else []
        problems += check_results(args.results, zip(table["suite"].to_pylist(), table["suite_hash"].to_pylist()))
    for problem in problems:
        print(problem)
    print(f"{'invalid' if problems else 'valid'}: {args.results}", file=sys.stderr)
    return 1 if problems else 0


def _report(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
