"""Whether the tuned protocol's choice of rate flatters the seeds it was made on (a check on the board).

Under ``tuned`` a (method, task)'s rate is chosen on the validation scores of the tuning seeds'
trials, and those seeds' finals at the chosen rate are the same trainings scored on test.  If the
choice favours lucky trainings, the tuning seeds' finals sit above the other seeds' finals by more
than under ``fixed``, where no choice is made.  Per (method, task) of a method that trains, with
finals on a tuning seed and on another seed, the primary metric's

    mean(finals of the tuning seeds) - mean(finals of the other seeds)

is averaged over the (method, task) pairs per protocol, with a 95% percentile-bootstrap interval
over the pairs (``stats.bootstrap_ci``), and so is the paired tuned - fixed difference: the part of
the tuned gap the choice explains.  A tuned mean over k final seeds of which t tune is raised by
about t / k of that difference.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from initbench.board import stats
from initbench.board.board import SeedGapRow, TuningSeedCheck


def tuning_seeds(table: pa.Table) -> list[int]:
    """The seeds the tuned protocol's trials ran on (none: no tuned trial in ``table``)."""
    trials = table.filter(pc.and_(pc.equal(table["protocol"], "tuned"), pc.equal(table["phase"], "trial")))
    return sorted(pc.unique(trials["seed"]).to_pylist())


def seed_gaps(view: pa.Table, primary: dict[str, str], tuning: set[int]) -> dict[tuple[str, str], float]:
    """Per (method, task) of ``view``'s ok final runs that trained (a learning rate) with a run on a
    seed in ``tuning`` and one on another seed: the mean primary score of the first minus the second's."""
    ok = view.filter(pc.and_(pc.equal(view["status"], "ok"), pc.is_valid(view["learning_rate"])))
    scores: dict[tuple[str, str], dict[bool, list[float]]] = defaultdict(lambda: {True: [], False: []})
    columns = (ok[c].to_pylist() for c in ("method", "task", "metric", "seed", "value"))
    for method, task, metric, seed, value in zip(*columns):
        if metric == primary.get(task) and value is not None:
            scores[(method, task)][seed in tuning].append(value)
    return {
        key: float(np.mean(by[True]) - np.mean(by[False]))
        for key, by in sorted(scores.items())
        if by[True] and by[False]
    }


def tuning_seed_check(table: pa.Table, views: dict[str, pa.Table], primary: dict[str, str]) -> TuningSeedCheck | None:
    """The check for one suite: ``table`` its rows (trials included), ``views`` its final rows per
    protocol (``counted.final_rows``), ``primary`` the primary metric per task.  None without tuned
    trials or without a (method, task) with finals on a tuning seed and another seed."""
    seeds = tuning_seeds(table)
    if not seeds or "tuned" not in views:
        return None
    tuned = seed_gaps(views["tuned"], primary, set(seeds))
    if not tuned:
        return None
    fixed = seed_gaps(views["fixed"], primary, set(seeds)) if "fixed" in views else {}
    paired = [tuned[k] - fixed[k] for k in sorted(set(tuned) & set(fixed))]
    comparisons = [("tuned", list(tuned.values())), ("fixed", list(fixed.values())), ("tuned - fixed (paired)", paired)]
    return TuningSeedCheck(seeds, _most_seeds(views["tuned"]), [_row(n, v) for n, v in comparisons if v])


def _most_seeds(view: pa.Table) -> int:
    """The most distinct final seeds of a (method, task) in ``view``."""
    per_cell = view.group_by(["method", "task"], use_threads=False).aggregate([("seed", "count_distinct")])
    return max(per_cell["seed_count_distinct"].to_pylist(), default=0)


def _row(name: str, values: list[float]) -> SeedGapRow:
    low, high = stats.bootstrap_ci(values, method="percentile", rng=stats.DEFAULT_SEED)
    share = float(np.mean(np.asarray(values) > 0))
    return SeedGapRow(name, len(values), float(np.mean(values)), low, high, share)
