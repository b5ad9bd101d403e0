"""The harness tax: initbench's harness against the code a PEFT / lm-eval user writes by hand.

Trains the same model, data, LoRA rank and steps, and evaluates the same base model, two ways:

* training (a) ``initbench.run.harness.run_one`` with the ``lora`` method and the suite's budget (steps
  overridden; its lm-eval step stubbed out, evaluation is measured on its own); (b) a minimal PEFT loop:
  ``LoraConfig`` + ``get_peft_model``, ``torch.optim.AdamW`` with the suite's optimizer settings, the
  same linear warmup schedule, the same seeded batches (``initbench.inputs.data.batches``), forward, backward,
  clip, step, ``loss.item()``.  Both must reach the same loss at every step.
* evaluation (a) ``run_one`` with the ``base`` method (no training: ``initbench.inputs.evaluation.evaluate``,
  the lm-eval bridge); (b) ``HFLM`` + ``lm_eval.simple_evaluate`` called directly on the same task
  config, task folder, limit and seeds.  Both must return the same score.

Every variant runs in a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own; the order
alternates every round (harness first, then bare first, ...) and the table reports medians over
``--repeats`` rounds.  Every child imports the same third-party libraries (torch, transformers, peft,
pyarrow, pandas, datasets, lm-eval) before any clock starts, as a process that trains and evaluates
does; an import is not harness tax.  The model load (``initbench.inputs.models.load_model``, from
initbench's cache in both) is timed on its own and left out of the ratios; everything after it
counts: data, the harness's bookkeeping (fingerprints, lending the base model), attach, init, training, results files.
The indented rows narrow the comparison to the harness's own timers (``init_seconds``,
``train_seconds``, ``eval_seconds``) against the same spans of the bare code.
``--profile`` adds one pyinstrument-profiled harness run per phase (not timed) and prints its top.

    OMP_NUM_THREADS=1 python benchmarks/harness_tax.py [--suite mini] [--task addition] [--steps 30]
        [--repeats 2] [--eval-limit 100] [--profile]

``--suite smoke`` (a tiny random model) checks the script in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from initbench.spec.budget import Budget
    from initbench.spec.suite import Suite, TaskSpec

GOAL = 0.03  # harness over bare: at most 3% more wall time and peak memory
MARK = "HARNESS_TAX "  # prefixes the one JSON line a child prints
PHASES = ("train", "eval")
KINDS = ("harness", "bare")


# --------------------------------------------------------------------------- child processes


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def configured_suite(args: argparse.Namespace) -> tuple[Suite, TaskSpec]:
    """The suite with ``--steps`` and ``--eval-limit`` applied, and the chosen task."""
    from initbench.spec.suite import load_suite

    suite = load_suite(args.suite)
    limit = args.eval_limit or None
    suite = replace(suite, budget=replace(suite.budget, steps=args.steps), eval=replace(suite.eval, limit=limit))
    return suite, suite.task(args.task)


def import_libraries() -> None:
    """The third-party libraries of a train-and-evaluate process, imported by every child before any
    clock starts: an import is not harness tax, and pyarrow's first ``Table.from_pylist`` would
    otherwise import pandas (0.3 s) in a harness child only, which lm-eval imports anyway in a real run."""
    import datasets  # noqa: F401
    import lm_eval.evaluator  # noqa: F401
    import pandas  # noqa: F401
    import peft  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from lm_eval.models.huggingface import HFLM  # noqa: F401
    from lm_eval.tasks import TaskManager  # noqa: F401


class TimedLoad:
    """Wraps a model loader: adds up its seconds and the growth of the peak RSS during it."""

    def __init__(self, load: Callable[..., Any]):
        self.load, self.seconds, self.rss_mib = load, 0.0, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start, rss = time.perf_counter(), peak_rss_mib()
        loaded = self.load(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.rss_mib += peak_rss_mib() - rss
        return loaded


@contextlib.contextmanager
def profiling(path: str | None) -> Iterator[None]:
    """Profile the block with pyinstrument when ``path`` is given: writes ``path`` + .txt/.flat.txt/.html."""
    if not path:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        Path(path + ".txt").write_text(profiler.output_text(show_all=False))
        Path(path + ".flat.txt").write_text(profiler.output_text(flat=True))
        Path(path + ".html").write_text(profiler.output_html())


def harness_child(args: argparse.Namespace, phase: str) -> dict[str, Any]:
    """``run_one`` for one phase: ``lora`` with evaluation stubbed out, or ``base`` (evaluation only).
    The lending module's ``load_model`` is wrapped to time the load, which is then taken off the wall time."""
    import pyarrow.parquet as pq

    from initbench.method.registry import get_method
    from initbench.run import harness, lending
    from initbench.store.results import CURVE_SUFFIX, RESULTS_SUFFIX

    suite, task = configured_suite(args)
    method = get_method("lora" if phase == "train" else "base")
    load = lending.load_model = TimedLoad(lending.load_model)
    if phase == "train":
        harness.evaluate = lambda *a, **k: ([], 0.0)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        outcome = harness.run_one(suite, method, task, args.seed, Path(out), force=True)
        wall = time.perf_counter() - start
        if outcome.status != "ok":
            raise SystemExit(f"harness run {outcome.status}: {outcome.error}")
        row = pq.read_table(outcome.path).to_pylist()[0]
        curve = pq.read_table(str(outcome.path).removesuffix(RESULTS_SUFFIX) + CURVE_SUFFIX).column("loss")
    result = {
        "load_s": load.seconds,
        "load_rss_mib": load.rss_mib,
        "total_s": wall - load.seconds,
        "device": row["device_name"],
        "peak_rss_mib": peak_rss_mib(),
    }
    if phase == "train":
        return {**result, "attach_s": row["init_seconds"], "loop_s": row["train_seconds"], "losses": curve.to_pylist()}
    return {**result, "lm_eval_s": row["eval_seconds"], "scores": outcome.scores}


def load_bare(suite: Suite) -> tuple[torch.nn.Module, Any, float, float]:
    """The base model and tokenizer from initbench's cache, with the seconds and peak RSS of the load."""
    from initbench.core.seeding import pick_device
    from initbench.inputs.models import load_model

    load = TimedLoad(load_model)
    loaded = load(suite.model, pick_device())
    return loaded.model, loaded.tokenizer, load.seconds, load.rss_mib


def bare_loop(
    model: torch.nn.Module, examples: list[dict[str, list[int]]], budget: Budget, seed: int, pad_id: int
) -> tuple[list[float], float]:
    """The training loop a PEFT user writes; returns the loss of every step and the loop's seconds."""
    import torch
    from transformers import get_scheduler

    from initbench.inputs.data import batches

    spec = budget.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=spec.lr, betas=tuple(spec.betas), eps=spec.eps, weight_decay=spec.weight_decay
    )
    schedule = get_scheduler(
        budget.schedule.name,
        optimizer,
        num_training_steps=budget.steps,
        num_warmup_steps=int(budget.schedule.warmup_ratio * budget.steps),
    )
    losses, start = [], time.perf_counter()
    model.train()
    for batch in batches(examples, budget.batch_size, budget.steps, seed, pad_id):
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses, time.perf_counter() - start


def bare_train_child(args: argparse.Namespace) -> dict[str, Any]:
    """Tokenize, attach LoRA with peft, train with ``bare_loop``."""
    import torch
    from peft import LoraConfig, get_peft_model

    from initbench.inputs.data import materialize, tokenize_records

    suite, task = configured_suite(args)
    if suite.budget.optimizer.name != "adamw" or suite.budget.optimizer.max_grad_norm <= 0:
        raise SystemExit("the bare loop is written for AdamW with gradient clipping")
    model, tokenizer, load_s, load_rss = load_bare(suite)
    start = time.perf_counter()
    examples = tokenize_records(materialize(task, suite.path).records("train"), tokenizer, suite.budget.max_length)
    attach_start = time.perf_counter()
    torch.manual_seed(args.seed)
    config = LoraConfig(
        r=suite.lora.rank,
        lora_alpha=suite.lora.alpha,
        target_modules=list(suite.lora.target_modules),
        lora_dropout=suite.lora.dropout,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    attach_s = time.perf_counter() - attach_start
    losses, loop_s = bare_loop(model, examples, suite.budget, args.seed, tokenizer.pad_token_id)
    return {
        "load_s": load_s,
        "load_rss_mib": load_rss,
        "total_s": time.perf_counter() - start,
        "attach_s": attach_s,
        "loop_s": loop_s,
        "losses": losses,
        "peak_rss_mib": peak_rss_mib(),
    }


def bare_eval_child(args: argparse.Namespace) -> dict[str, Any]:
    """``HFLM`` + ``lm_eval.simple_evaluate`` on the task's config, as an lm-eval user calls them."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from initbench.inputs.data import materialize
    from initbench.inputs.evaluation import parse_scores, task_config
    from initbench.spec.suite import builtin_suite_dir

    suite, task = configured_suite(args)
    model, tokenizer, load_s, load_rss = load_bare(suite)
    start = time.perf_counter()
    config = task_config(task.lm_eval_task, materialize(task, suite.path))
    eval_start = time.perf_counter()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=suite.eval.batch_size)
    output = lm_eval.simple_evaluate(
        model=lm,
        tasks=[config],
        limit=suite.eval.limit,
        log_samples=False,
        bootstrap_iters=1000,
        task_manager=TaskManager(include_path=str(builtin_suite_dir() / "lm_eval"), include_defaults=False),
        random_seed=args.seed,
        numpy_random_seed=args.seed,
        torch_random_seed=args.seed,
        fewshot_random_seed=args.seed,
    )
    end = time.perf_counter()
    scores = {s.metric: s.value for s in parse_scores(output["results"][task.lm_eval_task])}
    return {
        "load_s": load_s,
        "load_rss_mib": load_rss,
        "total_s": end - start,
        "lm_eval_s": end - eval_start,
        "scores": scores,
        "peak_rss_mib": peak_rss_mib(),
    }


def child_main(args: argparse.Namespace) -> None:
    kind, phase = args.child.split("-")
    import_libraries()
    with profiling(args.profile_out):
        if kind == "harness":
            result = harness_child(args, phase)
        else:
            result = bare_train_child(args) if phase == "train" else bare_eval_child(args)
    print(MARK + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- parent


def run_child(args: argparse.Namespace, kind: str, phase: str, profile_out: str | None = None) -> dict[str, Any]:
    """One variant in a fresh interpreter; returns the JSON line it printed."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        f"{kind}-{phase}",
        "--suite",
        args.suite,
        "--task",
        args.task,
        "--steps",
        str(args.steps),
        "--eval-limit",
        str(args.eval_limit),
        "--seed",
        str(args.seed),
    ] + (["--profile-out", profile_out] if profile_out else [])
    env = {**os.environ, **({"INITBENCH_FAST": "1"} if args.fast and kind == "harness" else {})}
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode or not lines:
        raise SystemExit(f"{kind} {phase} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(MARK) :])


def measure(args: argparse.Namespace) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """``--repeats`` rounds of every variant; the order flips every round (H B, B H, ...)."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(k, p): [] for k in KINDS for p in PHASES}
    for round_ in range(args.repeats):
        for phase in PHASES:
            for kind in KINDS if round_ % 2 == 0 else KINDS[::-1]:
                result = run_child(args, kind, phase)
                runs[kind, phase].append(result)
                print(
                    f"  round {round_ + 1} {phase:5} {kind:7}: {result['total_s']:7.2f} s, "
                    f"peak RSS {result['peak_rss_mib']:6.0f} MiB, load {result['load_s']:.2f} s",
                    flush=True,
                )
    return runs


def median(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def ratio(harness: float, bare: float) -> float:
    return harness / bare if bare else float("nan")


def loss_agreement(harness: list[dict[str, Any]], bare: list[dict[str, Any]], rtol: float = 0.0) -> tuple[str, bool]:
    """Final losses of both and the largest per-step difference over every run of both."""
    reference = harness[0]["losses"]
    gap = max(abs(a - b) for run in harness + bare for a, b in zip(reference, run["losses"], strict=True))
    rel = max(abs(a - b) / abs(a) for run in harness + bare for a, b in zip(reference, run["losses"], strict=True))
    return (
        f"final loss {reference[-1]:.6f} vs {bare[0]['losses'][-1]:.6f} (max step Δ {gap:.1e}, relative {rel:.1e})",
        gap <= 1e-6 or rel <= rtol,
    )


def score_agreement(harness: list[dict[str, Any]], bare: list[dict[str, Any]]) -> tuple[str, bool]:
    h, b = harness[0]["scores"], bare[0]["scores"]
    same = all(run["scores"] == h for run in harness + bare)
    return ", ".join(f"{m} {h[m]:.4f} vs {b.get(m, float('nan')):.4f}" for m in sorted(h)), same


# the parts of a phase timed on their own: (key, label); the harness's timers are init_seconds,
# train_seconds (from after the optimizer is built to the last step) and eval_seconds
PARTS = {"train": (("attach_s", "attach + init"), ("loop_s", "loop")), "eval": (("lm_eval_s", "lm-eval call"),)}


def time_row(label: str, h: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> list[Any]:
    h_s, b_s = median(h, key), median(b, key)
    return [label, h_s, b_s, ratio(h_s, b_s), None, None, None, ""]


def table_rows(
    runs: dict[tuple[str, str], list[dict[str, Any]]],
    fast: bool = False,
) -> tuple[list[list[Any]], dict[str, float], bool]:
    """The table, the ratios the goal is judged on, and whether losses and scores agree."""
    rows, ratios, agree = [], {}, True
    train_check = (lambda h, b: loss_agreement(h, b, rtol=1e-5)) if fast else loss_agreement
    for phase, check in (("train", train_check), ("eval", score_agreement)):
        h, b = runs["harness", phase], runs["bare", phase]
        text, same = check(h, b)
        agree &= same
        row = time_row(f"{phase} (end to end)", h, b, "total_s")
        h_m, b_m = median(h, "peak_rss_mib"), median(b, "peak_rss_mib")
        row[4:] = [h_m, b_m, ratio(h_m, b_m), text]
        ratios[f"{phase} time"], ratios[f"{phase} peak RSS"] = row[3], row[6]
        rows += [row] + [time_row(f"  {phase}: {label}", h, b, key) for key, label in PARTS[phase]]
    every = {kind: [r for p in PHASES for r in runs[kind, p]] for kind in KINDS}
    row = time_row("model load (excluded)", every["harness"], every["bare"], "load_s")
    h_r, b_r = median(every["harness"], "load_rss_mib"), median(every["bare"], "load_rss_mib")
    row[4:] = [h_r, b_r, ratio(h_r, b_r), "RSS: growth of the peak during the load"]
    return rows + [row], ratios, agree


def print_report(args: argparse.Namespace, runs: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    from tabulate import tabulate

    rows, ratios, agree = table_rows(runs, args.fast)
    if args.fast:
        print("\nharness runs with INITBENCH_FAST=1 (fast path); bare is the plain loop")
    headers = [
        "phase",
        "harness s",
        "bare s",
        "ratio",
        "harness peak RSS MiB",
        "bare peak RSS MiB",
        "ratio",
        "agreement",
    ]
    print()
    print(
        tabulate(
            rows, headers, tablefmt="github", floatfmt=("", ".2f", ".2f", ".3f", ".0f", ".0f", ".3f", ""), missingval=""
        )
    )
    print(
        f"\nmedians of {args.repeats} round(s); ratio = harness / bare; losses and scores "
        + ("agree" if agree else "DISAGREE (see the agreement column)")
    )
    verdicts = [f"{name} {value:.3f} {'ok' if value <= 1 + GOAL else 'OVER'}" for name, value in ratios.items()]
    met = all(value <= 1 + GOAL for value in ratios.values())
    print(
        f"goal: harness within {GOAL:.0%} of bare in training and evaluation (time and peak RSS): "
        f"{'MET' if met else 'NOT MET'} ({'; '.join(verdicts)})"
    )


def profile(args: argparse.Namespace, lines: int = 40) -> None:
    """One profiled harness run per phase (not timed); prints the top of each call tree."""
    folder = Path(args.profile_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for phase in PHASES:
        stem = str((folder / f"harness-{phase}").resolve())
        run_child(args, "harness", phase, profile_out=stem)
        tree = Path(stem + ".txt").read_text().strip().splitlines()
        print(f"\npyinstrument, harness {phase} (also {stem}.flat.txt: self time; {stem}.html):")
        print("\n".join(tree[tree.index("") + 1 :][:lines] if "" in tree else tree[:lines]))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="mini")
    parser.add_argument("--task", default="addition")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--eval-limit", type=int, default=100, help="examples lm-eval scores (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="profile the harness variants with pyinstrument")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="run the harness with INITBENCH_FAST=1 (initbench.run.train's fast path); losses then agree "
        "to float32 rounding (relative 1e-5), not bit for bit",
    )
    parser.add_argument("--profile-dir", default="runs/harness_tax", help="where --profile writes its files")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        child_main(args)
        return
    print("command: " + shlex.join(["python", *sys.argv]))
    print(
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    runs = measure(args)
    print(f"machine: {runs['harness', 'train'][0]['device']}, load average {os.getloadavg()[0]:.2f} at end")
    print_report(args, runs)
    if args.profile:
        profile(args)


if __name__ == "__main__":
    main()
