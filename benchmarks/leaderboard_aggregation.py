"""Time the leaderboard on a synthetic results table of 1,000,000 rows.

100 methods x 20 tasks x 10 seeds x 50 metrics, every row schema-complete (results
schema v2, unused columns null).  Times, in one process:

* ``aggregate``: the pyarrow group-by with mean, std, seed count and the per-cell
  percentile-bootstrap CI (100,000 cells);
* ``build``: everything in the tables (normalized IQM with stratified-bootstrap CIs,
  probability of improvement and Wilcoxon + Holm vs lora, cost);
* ``render``: the Markdown text (``initbench.board.leaderboard_text``: github tables, tabulate's text,
  laid out by ``initbench.board.markdown_table``);

and prints each against a plain pandas ``groupby(...).value.agg(["mean", "std", "count"])``
over the same keys, measured in the same run: wall-clock seconds and CPU seconds of this process
(on a machine shared with other work, the CPU time is the steadier of the two), each the best of
``--repeats`` runs of the step (1: a single run, as before).

    OMP_NUM_THREADS=1 python benchmarks/leaderboard_aggregation.py [--methods 100 --tasks 20 --seeds 10 --metrics 50]
                                                                   [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa


def synthetic(methods: int, tasks: int, seeds: int, metrics: int, rng_seed: int = 0) -> pa.Table:
    from initbench.store.results import RESULTS_SCHEMA

    rng = np.random.default_rng(rng_seed)
    names = ["base", "lora"] + [f"method-{i:03d}" for i in range(methods - 2)]
    m, t, s, k = np.meshgrid(np.arange(methods), np.arange(tasks), np.arange(seeds), np.arange(metrics), indexing="ij")
    m, t, s, k = (a.reshape(-1) for a in (m, t, s, k))
    n = m.size
    skill = rng.uniform(0.2, 0.8, methods)
    skill[0] = 0.05  # base: the floor
    value = np.clip(skill[m] + 0.05 * rng.standard_normal(n) + 0.02 * t / tasks, 0, 1)
    method_names = np.array(names, dtype=object)[m]
    task_names = np.array([f"task-{i:02d}" for i in range(tasks)], dtype=object)[t]
    columns = {
        "run_id": pa.array([f"syn/{a}/{b}/seed{c}/h" for a, b, c in zip(method_names, task_names, s)]),
        "suite": pa.array(np.full(n, "syn", dtype=object)),
        "suite_hash": pa.array(np.full(n, "h", dtype=object)),
        "method": pa.array(method_names),
        "task": pa.array(task_names),
        "seed": pa.array(s.astype(np.int64)),
        "config_hash": pa.array(np.full(n, "c", dtype=object)),
        "is_reference": pa.array(m == 0),
        "metric": pa.array(np.array([f"metric-{i:02d}" for i in range(metrics)], dtype=object)[k]),
        "value": pa.array(value),
        "status": pa.array(np.full(n, "ok", dtype=object)),
        "trainable_params": pa.array(np.where(m == 0, 0, 4096 * (1 + m % 4)).astype(np.int64)),
        "init_seconds": pa.array(rng.uniform(0, 1, n)),
        "train_seconds": pa.array(rng.uniform(1, 2, n)),
        "wall_seconds": pa.array(rng.uniform(2, 3, n)),
        "peak_memory_bytes": pa.array(np.full(n, 2**30, dtype=np.int64)),
        "train_tokens": pa.array(np.full(n, 1000, dtype=np.int64)),
        "calibration_examples": pa.array(np.zeros(n, dtype=np.int64)),
        "flops": pa.array(np.full(n, 1e9)),
        "protocol": pa.array(np.full(n, "fixed", dtype=object)),
        "phase": pa.array(np.full(n, "final", dtype=object)),
        "eval_split": pa.array(np.full(n, "test", dtype=object)),
    }
    arrays = [columns[f.name].cast(f.type) if f.name in columns else pa.nulls(n, f.type) for f in RESULTS_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=RESULTS_SCHEMA)


def timed(fn, *args, repeats: int = 1, **kwargs):
    """fn's result, and the wall-clock and CPU seconds it took (each the least over ``repeats`` calls)."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        best = (min(best[0], time.perf_counter() - wall), min(best[1], time.process_time() - cpu))
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--metrics", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each step; the best is reported")
    args = parser.parse_args()
    r = max(1, args.repeats)

    from initbench.board import leaderboard
    from initbench.board.leaderboard_text import render_board

    table, (t_make, _) = timed(synthetic, args.methods, args.tasks, args.seeds, args.metrics)
    print(
        f"synthetic table: {table.num_rows:,} rows ({args.methods} methods x {args.tasks} tasks x {args.seeds} seeds "
        f"x {args.metrics} metrics), built in {t_make:.2f} s"
    )

    keys = ["suite", "suite_hash", "method", "is_reference", "task", "metric"]
    df = table.select(keys + ["seed", "value", "status"]).to_pandas()
    _, t_pandas = timed(
        lambda: df[df["status"] == "ok"].groupby(keys, sort=True)["value"].agg(["mean", "std", "count"]), repeats=r
    )

    cells, t_plain = timed(leaderboard.aggregate, table, ci=False, repeats=r)
    _, t_agg = timed(leaderboard.aggregate, table, repeats=r)
    board, t_build = timed(leaderboard.build, table, repeats=r)
    text, t_render = timed(render_board, board, repeats=r)

    print(f"cells: {cells.num_rows:,}; rendered text: {len(text):,} characters; best of {r} run(s) per step")
    print(f"{'step':<62} {'wall s':>7} {'x pandas':>8} {'CPU s':>7} {'x pandas':>8}")
    whole = (t_build[0] + t_render[0], t_build[1] + t_render[1])
    for name, (wall, cpu) in [
        ("pandas groupby mean/std/count (reference)", t_pandas),
        ("aggregate, pyarrow group-by mean/std/count (no CI)", t_plain),
        (f"aggregate + percentile-bootstrap CI per cell ({leaderboard.BOOTSTRAP_REPS:,})", t_agg),
        ("build: + normalized IQM/strat. bootstrap, PoI, Wilcoxon+Holm", t_build),
        ("render Markdown (github tables)", t_render),
        ("build + render (the whole leaderboard)", whole),
    ]:
        print(f"{name:<62} {wall:7.2f} {wall / t_pandas[0]:8.2f} {cpu:7.2f} {cpu / t_pandas[1]:8.2f}")


if __name__ == "__main__":
    main()
