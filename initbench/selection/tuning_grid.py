"""The rates the tuned protocol tries per (method, task), and where its choices fell in them.

``grid: fixed`` (or no ``grid``): the suite's ``lr_grid`` for every method.  ``grid: curvature-centred``:
``initbench.selection.lr_prior``'s grid of ``points`` rates ``factor`` apart, centred on the rate the method's
curvature at init predicts (calibrated on ``lora``'s tuned rate), the same number of trials for every
method.  Its inputs -- the curvature table in the results folder (``initbench curvature``) and lora's
selection -- must be there before a sweep starts: :func:`trial_grids` names the command to run first
otherwise, before anything is computed or written.  Each selection file records its grid
(:meth:`TrialGrid.as_record`), and :func:`edge_report` counts, per grid kind, how often the chosen rate
was the lowest or the highest of its grid (where the best rate may lie outside it).

``tuning.extend_at_edge: K`` lets a grid grow where its best rate is on an edge: while the best
validation rate of a (method, task) is the lowest or the highest rate tried, the next rate past
that edge (:func:`rate_beyond`) is tried too, at most K times (:func:`extension_wanted`; the sweep
runs them before it selects for good).  The rule is the same for every method; the rates it added
are the grid's ``extended`` rates in the selection file, and the cost table counts their trials.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from initbench.spec.suite import TUNING_GRIDS, Suite, TuningSpec

FIXED, CURVATURE_CENTRED = TUNING_GRIDS
#: the method whose tuned rate calibrates a curvature-centred grid
REFERENCE = "lora"


@dataclass(frozen=True)
class TrialGrid:
    """The rates one (method, task) is tuned on, and for a centred grid what centred it."""

    kind: str
    rates: list[float]  # ascending, the extended rates included
    predicted_lr: float | None = None  # the centre (curvature-centred)
    calibration: dict[str, Any] = field(default_factory=dict)  # reference, reference_lr, reference_lambda, lambda_max
    extended: list[float] = field(default_factory=list)  # rates added past an edge (tuning.extend_at_edge), in order

    def as_record(self) -> dict[str, Any]:
        """What a selection file records of its grid (``extended`` only where rates were added)."""
        record: dict[str, Any] = {"kind": self.kind, "rates": list(self.rates)}
        if self.kind == CURVATURE_CENTRED:
            record.update(predicted_lr=self.predicted_lr, calibration=dict(self.calibration))
        if self.extended:
            record["extended"] = list(self.extended)
        return record

    def with_rate(self, lr: float) -> TrialGrid:
        """This grid with ``lr`` added past one of its edges."""
        return replace(self, rates=sorted([*self.rates, lr]), extended=[*self.extended, lr])


def rate_beyond(rates: Sequence[float], side: str) -> float:
    """The next rate past the ``"lowest"`` or ``"highest"`` rate of an ascending log-spaced grid of at
    least two rates, continuing the grid's own pattern: the edge's neighbour times ten (divided, below)
    where that lies past the edge by a step within 25% of the step between the edge and its neighbour
    (so 1e-3, 3e-3, 1e-2 goes on with 3e-2, then 1e-1), else the edge times that step (1, 2, 4 goes on
    with 8), to six significant digits."""
    if len(rates) < 2 or side not in ("lowest", "highest"):
        raise ValueError(f"a rate past the {side!r} edge needs a grid of two or more rates, got {list(rates)}")
    edge, neighbour = (rates[-1], rates[-2]) if side == "highest" else (rates[0], rates[1])
    step = math.log(edge / neighbour)  # > 0 above, < 0 below
    decade = neighbour * (10.0 if side == "highest" else 0.1)
    past = math.log(decade / edge)
    if past * step > 0 and abs(past) <= 1.25 * abs(step) and abs(step) <= 1.25 * abs(past):
        return float(f"{decade:.6g}")
    return float(f"{edge * math.exp(step):.6g}")


def extension_wanted(grid: TrialGrid, chosen: float | None, limit: int) -> float | None:
    """The rate to try next when ``chosen`` (the best rate of the trials, None when every trial failed)
    is on an edge of ``grid`` and fewer than ``limit`` rates were added to it (``tuning.extend_at_edge``);
    None otherwise."""
    if chosen is None or len(grid.extended) >= limit or len(grid.rates) < 2:
        return None
    from initbench.selection.lr_prior import edge_side

    side = edge_side(chosen, grid.rates)
    return rate_beyond(grid.rates, side) if side else None


def reachable_rates(tuning: TuningSpec, rates: Sequence[float]) -> list[float]:
    """The rates ``tuning.extend_at_edge`` could add to a grid of ``rates`` (past either edge, in
    order of distance), for checking contributed results."""
    out: list[float] = []
    for side in ("lowest", "highest"):
        grid = list(rates)
        for _ in range(tuning.extend_at_edge if len(grid) > 1 else 0):
            grid = sorted([*grid, rate_beyond(grid, side)])
            out.append(grid[0] if side == "lowest" else grid[-1])
    return out


def tuning_record(tuning: TuningSpec) -> dict[str, Any]:
    """The tuning allowance as plans and manifests record it (a fixed grid's record is unchanged
    from before curvature-centred grids: ``lr_grid`` and ``seeds``)."""
    extend = {"extend_at_edge": tuning.extend_at_edge} if tuning.extend_at_edge else {}
    if not tuning.curvature_centred:
        return {"lr_grid": list(tuning.lr_grid), "seeds": list(tuning.seeds)} | extend
    from initbench.selection.lr_prior import grid_shape_of

    points, factor = grid_shape_of(tuning)
    record = {"grid": CURVATURE_CENTRED, "points": points, "factor": factor, "seeds": list(tuning.seeds)}
    return record | ({"extend_at_edge": tuning.extend_at_edge} if tuning.extend_at_edge else {})


def trial_grids(
    suite: Suite, methods: Sequence[str], tasks: Sequence[str], out: Path
) -> dict[tuple[str, str], TrialGrid]:
    """The grid of every (method, task) of a tuned sweep (``methods``: those that train), from the
    suite's tuning and, for a curvature-centred grid, the curvature and lora's selection under ``out``.
    A missing input is a ``ProtocolError`` naming the command that makes it."""
    from initbench.selection.protocol import ProtocolError

    tuning = suite.tuning
    if tuning is None:
        raise ProtocolError(
            f"{suite.path}: suite {suite.name!r} has no 'tuning' section "
            "(tuning: {lr_grid: [...], seeds: [...]}); use --protocol fixed"
        )
    if not tuning.curvature_centred:
        return {(m, t): TrialGrid(FIXED, list(tuning.lr_grid)) for m in methods for t in tasks}
    if not methods:
        return {}
    from initbench.selection.lr_prior import priors

    try:
        found = priors(out, suite, list(methods), REFERENCE, tasks=list(tasks), require_tuned=True)
    except ValueError as err:
        raise ProtocolError(f"{suite.path}: tuning grid: curvature-centred: {err}") from None
    return {
        (p.method, p.task): TrialGrid(
            CURVATURE_CENTRED,
            p.grid,
            p.predicted_lr,
            {
                "reference": REFERENCE,
                "reference_lr": p.reference_lr,
                "reference_lambda": p.reference_lambda,
                "lambda_max": p.lambda_max,
            },
        )
        for p in found
    }


def edge_report(results: Path) -> list[dict[str, Any]]:
    """Per (suite, grid kind), over the selection files under ``results``: how many chose a rate of
    their grid, and how many of those chose its lowest or its highest rate.  A selection file from
    before grids were recorded is a fixed grid of its trials' rates; a choice that is not a rate of
    the grid (every trial failed: the suite's default) is counted apart."""
    from initbench.selection.lr_prior import edge_side
    from initbench.selection.protocol import selection_name

    counts: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(Path(results).rglob(selection_name("*"))):
        try:
            payload = json.loads(path.read_text())
            grid = payload.get("grid") or {"kind": FIXED, "rates": [t["lr"] for t in payload["trials"]]}
            rates, chosen = [float(r) for r in grid["rates"]], payload["selected_lr"]
            key = (payload["suite"], grid["kind"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: `initbench validate --contributed` names it (protocol.stale_selections)
        row = counts.setdefault(
            key, {"suite": key[0], "kind": key[1], "selections": 0, "lowest": 0, "highest": 0, "not_from_grid": 0}
        )
        if chosen is None or not any(math.isclose(chosen, r, rel_tol=1e-9) for r in rates):
            row["not_from_grid"] += 1
            continue
        row["selections"] += 1
        if side := edge_side(chosen, rates):
            row[side] += 1
    return [counts[key] for key in sorted(counts)]
