"""How much the tuning seed's final beats the other finals, tuned vs fixed protocol.

Under the tuned protocol the rate is chosen on the validation score of the tuning seed's trial, and
the final of that seed at the chosen rate is the same training scored on test.  If the choice
favours a lucky training, that seed's tuned final sits above the other seeds' finals by more than
it does at the suite's default rate (fixed protocol, no choice made).  Per (method, task) with the
tuning seed and at least one other seed, the primary metric's difference

    final(tuning seed) - mean(finals of the other seeds)

is averaged over (method, task) per protocol, with a 95% percentile-bootstrap interval over the
(method, task) pairs, and the paired tuned-minus-fixed difference the same way.

    python scripts/tuning_seed_bias.py campaigns/v0 [--tuning-seed 0]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from initbench.board import stats
from initbench.selection.counted import final_rows, read_results


def seed_gaps(results: Path, protocol: str, tuning_seed: int) -> dict[tuple[str, str], float]:
    """Per (method, task) of ``protocol``'s finals that trained: the tuning seed's primary score minus
    the mean of the other seeds'."""
    view = final_rows(read_results(results), protocol)
    view = view.filter(pc.and_(pc.equal(view["status"], "ok"), pc.equal(view["metric"], view["primary_metric"])))
    view = view.filter(pc.is_valid(view["learning_rate"]))  # methods that train
    scores: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for method, task, seed, value in zip(*(view[c].to_pylist() for c in ("method", "task", "seed", "value"))):
        scores[(method, task)][seed] = value
    return {
        key: by_seed[tuning_seed] - float(np.mean([v for s, v in by_seed.items() if s != tuning_seed]))
        for key, by_seed in sorted(scores.items())
        if tuning_seed in by_seed and len(by_seed) > 1
    }


def mean_with_interval(values: list[float], seed: int = 0) -> tuple[float, float, float]:
    """The mean and its 95% percentile-bootstrap interval (``stats.bootstrap_ci``)."""
    low, high = stats.bootstrap_ci(values, method="percentile", rng=seed)
    return float(np.mean(values)), low, high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--tuning-seed", type=int, default=0)
    args = parser.parse_args()
    gaps = {p: seed_gaps(args.results, p, args.tuning_seed) for p in ("tuned", "fixed")}
    both = sorted(set(gaps["tuned"]) & set(gaps["fixed"]))
    rows = [
        ("tuned", list(gaps["tuned"].values())),
        ("fixed", list(gaps["fixed"].values())),
        ("tuned - fixed (paired)", [gaps["tuned"][k] - gaps["fixed"][k] for k in both]),
    ]
    print(f"seed {args.tuning_seed}'s final minus the other seeds' mean, primary metric, over (method, task):")
    print(f"{'protocol':<24} {'pairs':>5} {'mean':>8} {'95% CI':>20} {'share > 0':>9}")
    for name, values in rows:
        if not values:
            continue
        mean, low, high = mean_with_interval(values)
        share = float(np.mean(np.asarray(values) > 0))
        print(f"{name:<24} {len(values):>5} {mean:>8.4f} {f'[{low:.4f}, {high:.4f}]':>20} {share:>9.2f}")


if __name__ == "__main__":
    main()
