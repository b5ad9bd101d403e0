"""The CPU fast path of issue 13, measured in one run against today's default.

Modes (``--modes``, the first is the baseline every ratio divides by):

====================  ==============  =========  ==================  ==========================
mode                  precision       compile    processes x threads  what it is
====================  ==============  =========  ==================  ==========================
``float32``           float32         no         1 x all cores        today's default
``bf16``              bf16 autocast   no         1 x all cores
``bf16-2x1``          bf16 autocast   no         cores x 1            ``--workers 2 --threads-per-run 1`` here
``bf16-compile``      bf16 autocast   yes        1 x all cores
``bf16-compile-2x1``  bf16 autocast   yes        cores x 1
``float32-2x1``       float32         no         cores x 1
====================  ==============  =========  ==================  ==========================

Three measurements, each printed as it finishes and all together at the end (and written to
``<work>/report.md`` for ``benchmarks/results/``):

1. **tokens/s**: ``lora`` training on the suite's model and first task, ``--token-steps`` timed
   steps after one warm-up step (for ``compile`` the warm-up step's time, the compile, is shown
   apart), in fresh processes with the mode's settings; a mode with several processes runs them
   at once and adds their rates (the machine's throughput).  ``--repeats`` rounds, the order of the
   modes reversed every other round, the median reported.
2. **grid throughput**: ``initbench sweep`` of ``--methods`` x the suite's tasks x ``--seeds`` in
   the mode (``--protocol``: ``fixed``, or ``tuned`` to include the rate trials and their init
   reuse), wall clock from start to end; runs per hour and the ratio to the baseline.  Each mode writes to ``<work>/<mode>/runs``; a finished mode is not rerun
   (``<work>/<mode>/grid.json`` holds its time), so an interrupted benchmark resumes with the
   unfinished mode, which starts over (its time must cover the whole grid).
3. **score agreement** (the runs at the suite's rate): per method, task and metric, mean and seed s.d. over the seeds in each mode,
   the difference of the means against the baseline, that difference in units of its standard
   error ``sd * sqrt(2 / n)`` with the baseline's s.d. (|z| <= 2: within seed noise) and with the s.d.
   pooled over both modes, and the mean per-seed difference.

    OMP_NUM_THREADS unset; python benchmarks/cpu_fast_path.py --suite mini --methods lora,pissa \\
        --seeds 0,1,2,3,4 [--modes float32,bf16,bf16-2x1,bf16-compile] [--grid-modes M,...] [--steps N] [--eval-limit N] \\
        [--work cpu-fast-path]

``--steps``/``--eval-limit`` cut the suite (a copy in ``<work>``, a different spec hash) for a quick
first look; score agreement needs the suite's own budget.  ``--suite smoke --seeds 0,1 --token-steps 3``
checks the script in a minute.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml
from tabulate import tabulate

MARK = "CPU_FAST_PATH "  # prefixes the JSON line a tokens/s child prints


@dataclass(frozen=True)
class Mode:
    precision: str
    compile: bool
    parallel: bool  # one process per core, one thread each

    def processes(self, cores: int) -> tuple[int, int]:
        """(processes, threads each) on ``cores`` cores."""
        return (cores, 1) if self.parallel else (1, cores)


MODES = {
    "float32": Mode("float32", False, False),
    "bf16": Mode("bf16-autocast", False, False),
    "bf16-2x1": Mode("bf16-autocast", False, True),
    "bf16-compile": Mode("bf16-autocast", True, False),
    "bf16-compile-2x1": Mode("bf16-autocast", True, True),
    "float32-2x1": Mode("float32", False, True),
}


def mode_env(mode: Mode, threads: int) -> dict[str, str]:
    from initbench.run.execution import COMPILE_ENV, PRECISION_ENV, worker_environment

    env = {**os.environ, PRECISION_ENV: mode.precision, COMPILE_ENV: "1" if mode.compile else "0"}
    return {**env, **worker_environment(threads)}


# --------------------------------------------------------------------------- 1. tokens/s


def tokens_child(suite_path: str, steps: int) -> None:
    """In a fresh process: ``lora`` on the suite's first task, one warm-up step then ``steps`` timed ones."""
    from initbench.run import execution
    from initbench.spec.suite import load_suite
    from initbench.sweeps.planning import time_lora_steps

    execution.apply_threads()
    warmup, timed = time_lora_steps(load_suite(suite_path), steps)
    measured = {"tokens": timed.tokens, "seconds": timed.seconds, "warmup_seconds": warmup.seconds}
    print(
        MARK + json.dumps({**measured, "threads": execution.apply_threads()}),
        flush=True,
    )


def tokens_per_second(mode: Mode, suite_path: str, steps: int, cores: int) -> dict[str, float]:
    """The machine's training tokens/s in ``mode`` (processes at once, rates added)."""
    processes, threads = mode.processes(cores)
    command = [sys.executable, __file__, "--child-tokens", suite_path, "--token-steps", str(steps)]

    def one(_: int) -> dict:
        done = subprocess.run(command, env=mode_env(mode, threads), capture_output=True, text=True)
        line = next((text for text in done.stdout.splitlines() if text.startswith(MARK)), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"tokens/s child failed ({done.returncode}): {done.stderr[-1500:]}")
        return json.loads(line[len(MARK) :])

    with ThreadPoolExecutor(processes) as pool:
        results = list(pool.map(one, range(processes)))
    return {
        "tokens_per_second": sum(r["tokens"] / r["seconds"] for r in results),
        "warmup_seconds": max(r["warmup_seconds"] for r in results),
        "processes": processes,
        "threads": threads,
    }


# --------------------------------------------------------------------------- 2. grid throughput


def run_grid(
    name: str,
    mode: Mode,
    suite_path: str,
    methods: list[str],
    seeds: str,
    work: Path,
    cores: int,
    protocol: str = "fixed",
) -> dict[str, float]:
    """``initbench sweep`` of the grid in ``mode`` (resumed: a finished mode's time is kept)."""
    record = work / name / "grid.json"
    if record.exists():
        print(f"[grid] {name}: finished earlier, {record}", file=sys.stderr, flush=True)
        return json.loads(record.read_text())
    processes, threads = mode.processes(cores)
    out = work / name / "runs"
    shutil.rmtree(out, ignore_errors=True)  # an unfinished mode starts over: its time covers the whole grid
    command = [
        sys.executable,
        "-m",
        "initbench.cli",
        "sweep",
        "--suite",
        suite_path,
        "--seeds",
        seeds,
        "--out",
        str(out),
        "--workers",
        str(processes),
        "--threads-per-run",
        str(threads),
        "--protocol",
        protocol,
        "--precision",
        mode.precision,
        *(["--compile"] if mode.compile else []),
    ]
    for method in methods:
        command += ["--method", method]
    print(f"[grid] {name}: {' '.join(command[2:])}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, env=mode_env(mode, threads))  # its progress goes to our stderr
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"grid of mode {name} failed (exit {done.returncode}); rerun to resume")
    from initbench.selection.counted import read_results

    rows = {r["run_id"]: r for r in read_results(out).to_pylist()}
    result = {
        "seconds": seconds,
        "runs": len(rows),
        "runs_per_hour": len(rows) / seconds * 3600,
        "init_reused": sum(bool(r["init_reused"]) for r in rows.values()),
    }
    record.write_text(json.dumps(result))
    return result


# --------------------------------------------------------------------------- 3. score agreement


def scores(out: Path) -> dict[tuple[str, str, str], dict[int, float]]:
    """(method, task, metric) -> seed -> value of the ok runs at the suite's rate under ``out``."""
    from initbench.selection.counted import read_results

    found: dict[tuple[str, str, str], dict[int, float]] = {}
    for row in read_results(out).to_pylist():
        if (
            row["status"] == "ok"
            and row["protocol"] == "fixed"
            and row["metric"] is not None
            and row["value"] is not None
        ):
            found.setdefault((row["method"], row["task"], row["metric"]), {})[row["seed"]] = row["value"]
    return found


def agreement(baseline: dict, other: dict, name: str) -> list[list]:
    """One row per (method, task, metric) both modes have: means, seed s.d., difference, z, paired diff."""
    rows = []
    for key in sorted(set(baseline) & set(other)):
        seeds = sorted(set(baseline[key]) & set(other[key]))
        if len(seeds) < 2:
            continue
        a, b = [baseline[key][s] for s in seeds], [other[key][s] for s in seeds]
        sd = statistics.stdev(a)
        diff = statistics.mean(b) - statistics.mean(a)
        se = sd * math.sqrt(2 / len(seeds))
        pooled_se = math.sqrt((sd**2 + statistics.stdev(b) ** 2) / 2) * math.sqrt(2 / len(seeds))
        paired = [y - x for x, y in zip(a, b)]
        z = _ratio(diff, se)
        rows.append(
            [
                *key,
                name,
                len(seeds),
                f"{statistics.mean(a):.4f} ± {sd:.4f}",
                f"{statistics.mean(b):.4f} ± {statistics.stdev(b):.4f}",
                f"{diff:+.4f}",
                f"{z:+.2f}",
                "yes" if abs(z) <= 2 else "NO",
                f"{_ratio(diff, pooled_se):+.2f}",
                f"{statistics.mean(paired):+.4f} ± {statistics.stdev(paired):.4f}",
            ]
        )
    return rows


def _ratio(diff: float, se: float) -> float:
    """``diff / se``, 0 for no difference at no spread, infinite for a difference at no spread."""
    return diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))


# --------------------------------------------------------------------------- main


def suite_copy(args: argparse.Namespace, work: Path) -> str:
    """The suite to run: by name, or a copy cut to ``--steps`` / ``--eval-limit``."""
    from initbench.spec.suite import load_suite

    if args.steps is None and args.eval_limit is None:
        return args.suite
    spec = yaml.safe_load(Path(load_suite(args.suite).path).read_text())
    if args.steps is not None:
        spec["budget"]["steps"] = args.steps
    if args.eval_limit is not None:
        spec["eval"]["limit"] = args.eval_limit
    path = work / f"{spec['name']}-cut.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="mini")
    parser.add_argument("--methods", default="lora,pissa")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--modes", default="float32,bf16,bf16-2x1,bf16-compile")
    parser.add_argument(
        "--protocol",
        choices=["fixed", "tuned"],
        default="fixed",
        help="tuned: the grid includes the suite's rate trials (and reuses their inits)",
    )
    parser.add_argument("--steps", type=int, default=None, help="cut the suite's training steps (quick look)")
    parser.add_argument("--eval-limit", type=int, default=None, help="cut the suite's test examples (quick look)")
    parser.add_argument("--token-steps", type=int, default=20, help="timed training steps for tokens/s")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the tokens/s measurement (median)")
    parser.add_argument("--work", type=Path, default=Path("cpu-fast-path"), help="results of every mode (resumable)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: tokens, grid")
    parser.add_argument(
        "--grid-modes",
        default=None,
        help="the modes whose grid runs (default: every mode); e.g. leave out bf16-compile, "
        "whose tokens/s and compile time are measured either way",
    )
    parser.add_argument("--child-tokens", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_tokens:
        tokens_child(args.child_tokens, args.token_steps)
        return 0

    from initbench.core import provenance
    from initbench.run.execution import available_cores

    names = [m for m in args.modes.split(",") if m]
    unknown = [m for m in names if m not in MODES]
    if unknown:
        print(f"cpu_fast_path: unknown mode(s) {', '.join(unknown)}; one of {', '.join(MODES)}", file=sys.stderr)
        return 2
    skip = set(filter(None, args.skip.split(",")))
    grid_names = names if args.grid_modes is None else [m for m in args.grid_modes.split(",") if m]
    if not set(grid_names) <= set(names) or names[0] not in grid_names:
        print(
            f"cpu_fast_path: --grid-modes must name modes of --modes, the baseline {names[0]} among them",
            file=sys.stderr,
        )
        return 2
    cores, work = available_cores(), args.work.resolve()
    suite_path = suite_copy(args, work)
    methods = [m for m in args.methods.split(",") if m]
    cpu = provenance.cpu_identity()
    header = (
        f"CPU fast path, suite {args.suite}, {args.protocol} protocol, methods {args.methods}, seeds {args.seeds}"
        + (f" cut to {args.steps} steps" if args.steps else "")
        + (f", eval limit {args.eval_limit}" if args.eval_limit else "")
        + f"; {cpu['cpu_model']} ({cores} cores; {cpu['cpu_flags']}; torch {cpu['cpu_capability']}); "
        f"code {provenance.code_identity()}; baseline mode {names[0]}"
    )
    print(header, file=sys.stderr, flush=True)

    tokens, grids = {}, {}
    if "tokens" not in skip:
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for r in range(args.repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                rounds[name].append(tokens_per_second(MODES[name], suite_path, args.token_steps, cores))
                print(
                    f"[tokens/s] round {r + 1}/{args.repeats} {name}: "
                    f"{rounds[name][-1]['tokens_per_second']:.1f} (warm-up step "
                    f"{rounds[name][-1]['warmup_seconds']:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        tokens = {
            name: {key: statistics.median(m[key] for m in measured) for key in measured[0]}
            for name, measured in rounds.items()
        }
    if "grid" not in skip:
        for name in grid_names:
            grids[name] = run_grid(name, MODES[name], suite_path, methods, args.seeds, work, cores, args.protocol)
            print(
                f"[grid] {name}: {grids[name]['runs']} runs in {grids[name]['seconds']:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    base = names[0]
    rows = []
    for name in names:
        mode = MODES[name]
        processes, threads = mode.processes(cores)
        t, g = tokens.get(name), grids.get(name)
        rows.append(
            [
                name,
                mode.precision,
                "yes" if mode.compile else "no",
                f"{processes} x {threads}",
                f"{t['tokens_per_second']:.1f}" if t else "",
                f"{t['tokens_per_second'] / tokens[base]['tokens_per_second']:.2f}x" if t and base in tokens else "",
                f"{t['warmup_seconds']:.1f}" if t else "",
                f"{g['runs']} in {g['seconds']:.0f} s ({g.get('init_reused', 0)} inits reused)" if g else "",
                f"{g['runs_per_hour']:.2f}" if g else "",
                f"{g['runs_per_hour'] / grids[base]['runs_per_hour']:.2f}x" if g and base in grids else "",
            ]
        )
    report = [
        header,
        "",
        tabulate(
            rows,
            [
                "mode",
                "precision",
                "compile",
                "processes x threads",
                "train tok/s (median)",
                "vs base",
                "warm-up step s",
                "grid",
                "runs/hour",
                "vs base",
            ],
            tablefmt="github",
            disable_numparse=True,
        ),
    ]
    if grids and base in grids:
        reference = scores(work / base / "runs")
        agree = [
            row
            for name in names[1:]
            if name in grids
            for row in agreement(reference, scores(work / name / "runs"), name)
        ]
        report += [
            "",
            f"score agreement against {base} (z = difference / ({base}'s seed s.d. x sqrt(2/n)); |z| <= 2: within "
            "seed noise; z (pooled s.d.): the same with the s.d. pooled over both modes, sqrt((sd_a^2 + sd_b^2) / 2); "
            "paired difference: mean ± s.d. over seeds of mode - baseline)",
            "",
            tabulate(
                agree,
                [
                    "method",
                    "task",
                    "metric",
                    "mode",
                    "seeds",
                    f"{base} mean ± sd",
                    "mode mean ± sd",
                    "difference",
                    "z",
                    "within noise",
                    "z (pooled s.d.)",
                    "paired difference",
                ],
                tablefmt="github",
                disable_numparse=True,
            ),
        ]
    text = "\n".join(report)
    print(text)
    work.mkdir(parents=True, exist_ok=True)
    (work / "report.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
