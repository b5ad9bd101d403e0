"""How well a suite can tell methods apart: seed-to-seed spread per task and metric, and the smallest
difference between two methods that 3 (or n) seeds resolve.

Reads a results folder in which ``--method`` (default ``lora``) ran several seeds and ``base`` ran
one (for the gain), e.g. after

    initbench sweep --suite mini --method base --seeds 0 --out runs/noise
    initbench sweep --suite mini --method lora --seeds 0-7 --out runs/noise
    python benchmarks/noise_floor.py runs/noise

and prints, per (task, metric): seeds, mean, seed s.d., the minimum detectable difference (two-sided,
alpha 0.05, power 0.8, normal approximation; ``initbench.board.stats.minimum_detectable_difference``) with
3 seeds and with the seeds run, base's value and the method's gain over it.  Values are in points
(x100) for metrics in [0, 1].
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from tabulate import tabulate

from initbench.board.stats import minimum_detectable_difference
from initbench.inputs.evaluation import primary_metric
from initbench.selection.counted import read_results


def noise_table(results: Path, method: str, seeds_for_mdd: int = 3) -> list[dict[str, object]]:
    rows = [
        r
        for r in read_results(results).to_pylist()
        if r["status"] == "ok" and r["phase"] == "final" and r["protocol"] == "fixed" and r["metric"] is not None
    ]
    base = {(r["task"], r["metric"]): r["value"] for r in rows if r["method"] == "base"}
    values: dict[tuple[str, str, str], dict[int, float]] = {}
    for r in rows:
        if r["method"] == method:
            values.setdefault((r["task"], r["lm_eval_task"], r["metric"]), {})[r["seed"]] = r["value"]
    table = []
    for (task, lm_eval_task, metric), by_seed in sorted(values.items()):
        seeds = sorted(by_seed)
        xs = [100 * by_seed[s] for s in seeds]
        sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
        floor = base.get((task, metric))
        table.append(
            {
                "task": task,
                "metric": metric + (" (primary)" if metric == primary_metric(lm_eval_task)[0] else ""),
                "seeds": len(seeds),
                "mean": statistics.fmean(xs),
                "s.d.": sd,
                f"MDD {seeds_for_mdd} seeds": minimum_detectable_difference(sd, seeds_for_mdd),
                f"MDD {len(seeds)} seeds": minimum_detectable_difference(sd, len(seeds)),
                "base": None if floor is None else 100 * floor,
                "gain": None if floor is None else statistics.fmean(xs) - 100 * floor,
                "values": " ".join(f"{x:.1f}" for x in xs),
            }
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--method", default="lora")
    parser.add_argument("--mdd-seeds", type=int, default=3)
    args = parser.parse_args(argv)
    table = noise_table(args.results, args.method, args.mdd_seeds)
    if not table:
        print(f"no fixed-protocol final results of {args.method!r} in {args.results}", file=sys.stderr)
        return 2
    print(tabulate(table, headers="keys", tablefmt="github", floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
