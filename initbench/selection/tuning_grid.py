"""The rates the tuned protocol tries per (method, task), and where its choices fell in them.

``grid: fixed`` (or no ``grid``): the suite's ``lr_grid`` for every method.  ``grid: curvature-centred``:
``initbench.selection.lr_prior``'s grid of ``points`` rates ``factor`` apart, centred on the rate the method's
curvature at init predicts (calibrated on ``lora``'s tuned rate), the same number of trials for every
method.  Its inputs -- the curvature table in the results folder (``initbench curvature``) and lora's
selection -- must be there before a sweep starts: :func:`trial_grids` names the command to run first
otherwise, before anything is computed or written.  Each selection file records its grid
(:meth:`TrialGrid.as_record`), and :func:`edge_report` counts, per grid kind, how often the chosen rate
was the lowest or the highest of its grid (where the best rate may lie outside it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    rates: list[float]
    predicted_lr: float | None = None  # the centre (curvature-centred)
    calibration: dict[str, Any] = field(default_factory=dict)  # reference, reference_lr, reference_lambda, lambda_max

    def as_record(self) -> dict[str, Any]:
        """What a selection file records of its grid."""
        record: dict[str, Any] = {"kind": self.kind, "rates": list(self.rates)}
        if self.kind == CURVATURE_CENTRED:
            record.update(predicted_lr=self.predicted_lr, calibration=dict(self.calibration))
        return record


def tuning_record(tuning: TuningSpec) -> dict[str, Any]:
    """The tuning allowance as plans and manifests record it (a fixed grid's record is unchanged
    from before curvature-centred grids: ``lr_grid`` and ``seeds``)."""
    if not tuning.curvature_centred:
        return {"lr_grid": list(tuning.lr_grid), "seeds": list(tuning.seeds)}
    from initbench.selection.lr_prior import grid_shape_of

    points, factor = grid_shape_of(tuning)
    return {"grid": CURVATURE_CENTRED, "points": points, "factor": factor, "seeds": list(tuning.seeds)}


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
