"""How small a difference the board can resolve: per task, the seed-to-seed spread of the primary
metric and the smallest difference between two methods its seeds detect.

Per task, over the methods that train (``is_reference`` False) with two seeds or more: the pooled
seed s.d. (the square root of the mean of their variances, a steadier estimate than any one
method's few seeds), ``lora``'s own s.d., the seeds per method (the most common count), and the
minimum detectable difference at that count (``stats.minimum_detectable_difference``: two-sided,
alpha 0.05, power 0.8, normal approximation) from the pooled s.d.  A gap between two methods below
it is one the board cannot tell from seed noise on that task.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from initbench.board import stats
from initbench.board.board import Cell, ResolutionRow
from initbench.board.leaderboard import REFERENCE_METHOD


def resolution(cells: list[Cell], primary: dict[str, str]) -> list[ResolutionRow]:
    """A row per task of ``primary`` with a trained method of two seeds or more, in task order."""
    spread: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        if (
            not c.is_reference
            and c.metric == primary.get(c.task)
            and c.seeds >= 2
            and c.std is not None
            and not math.isnan(c.std)
        ):
            spread[c.task].append(c)
    rows = []
    for task in sorted(spread):
        found = spread[task]
        pooled = math.sqrt(sum(c.std**2 for c in found) / len(found))
        seeds = Counter(c.seeds for c in found).most_common(1)[0][0]
        reference = next((c.std for c in found if c.method == REFERENCE_METHOD), None)
        mdd = stats.minimum_detectable_difference(pooled, seeds)
        rows.append(ResolutionRow(task, primary[task], len(found), pooled, reference, seeds, mdd))
    return rows
