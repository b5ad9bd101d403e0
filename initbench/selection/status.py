"""``initbench status RESULTS``: the grid of a results folder, done / failed / missing.

What is expected comes from the plans the sweeps wrote (``<out>/<suite>/sweeps/*.json``, see
``initbench.sweeps.sweep.write_plan``): every (method, task, seed) at the suite's rate, and for ``tuned``
every trial (rates added past an edge of a grid included, ``tuning.extend_at_edge``) and, once its
selection file exists and chose among every rate tried, every final at the chosen rate (before that,
the finals count as missing).  What happened comes from the results files: ``ok`` and ``diverged`` are
done, ``failed`` is failed (with its reason), no file is missing.  Runs found on disk that no plan
asked for are counted too.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from initbench.selection.protocol import selection_path, stale_selection
from initbench.store.results import CURVE_SUFFIX, DONE, RESULTS_SUFFIX, read_tree, run_stem


@dataclass
class GridStatus:
    """Counts per (suite, method) and the failures with their reasons."""

    counts: dict[tuple[str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[tuple[str, str]] = field(default_factory=list)  # (run id, error)
    missing: list[str] = field(default_factory=list)  # run ids, or what is awaited
    set_aside: list[str] = field(default_factory=list)  # superseded tuned finals, with why
    plans: int = 0

    @property
    def complete(self) -> bool:
        return not self.failures and not self.missing


def _expected_stems(out: Path, plan: dict) -> list[tuple[str, Path]]:
    """(method, stem) of every run a plan asks for; tuned finals only once their selection exists."""
    name, spec_hash = plan["suite"], plan["suite_hash"]
    expected = []
    for method in plan["methods"]:
        trains = plan.get("trains", {}).get(method, True)
        for task in plan["tasks"]:
            expected += [(method, run_stem(out, name, method, task, s, spec_hash)) for s in plan["seeds"]]
            if plan["protocol"] != "tuned" or not trains:
                continue
            tuning = plan["tuning"] or {"lr_grid": [], "seeds": []}
            rates = tuning.get("rates", {}).get(method, {}).get(task, tuning.get("lr_grid", []))  # centred: per task
            expected += [
                (method, run_stem(out, name, method, task, s, spec_hash, lr=lr, split="validation"))
                for lr in rates
                for s in tuning["seeds"]
            ]
            selection = selection_path(out, name, method, task, spec_hash)
            stale = stale_selection(selection) if selection.exists() else "awaiting selection"
            payload = None if stale else json.loads(selection.read_text())
            added = tuning.get("extended", {}).get(method, {}).get(task, [])  # past an edge of the grid
            if payload is not None and not _covers(payload, added):
                stale = "awaiting selection over every rate tried"  # chosen before those rates were tried
            chosen = None if stale else payload["selected_lr"]
            for s in plan["seeds"]:
                expected.append(
                    (
                        method,
                        run_stem(out, name, method, task, s, spec_hash, lr=chosen)
                        if chosen is not None
                        else Path(f"{name}/{method}/{task}/seed{s}-tuned-final ({stale})"),
                    )
                )
    return expected


def _covers(selection: dict, rates: list[float]) -> bool:
    """Whether a selection file chose among every one of ``rates`` (the rates a plan added to its grid)."""
    chosen_among = [float(t["lr"]) for t in selection["trials"]]
    return all(any(math.isclose(lr, c, rel_tol=1e-9) for c in chosen_among) for lr in rates)


def grid_status(out: Path) -> GridStatus:
    """Tally every planned and every finished run under ``out``.  Every results file is read
    first: one that cannot be read, or a run found in two files, is a ``ResultsError`` naming
    the file(s); tuned finals superseded by a later selection are set aside and listed."""
    from initbench.selection.protocol import superseded

    out = Path(out)
    status = GridStatus()
    runs = {
        path.with_name(path.name[: -len(RESULTS_SUFFIX)]): table.slice(0, 1).to_pylist()[0]
        for path, table in read_tree(out).items()
        if table.num_rows
    }
    read_tree(out, CURVE_SUFFIX)  # an empty or corrupt curve beside a good result is an error too
    stale = superseded(out)
    status.set_aside = sorted(stale.values())
    seen: set[Path] = set()
    for plan_path in sorted(out.glob("*/sweeps/*.json")):
        plan = json.loads(plan_path.read_text())
        status.plans += 1
        for method, stem in _expected_stems(out, plan):
            if stem in seen:
                continue
            seen.add(stem)
            _tally(status, plan["suite"], method, stem, out, runs.get(stem))
    for stem, row in runs.items():
        if stem not in seen and row["run_id"] not in stale:
            seen.add(stem)
            _tally(status, row["suite"], row["method"], stem, out, row)
    return status


def _tally(status: GridStatus, suite: str, method: str, stem: Path, out: Path, row: dict | None) -> None:
    counts = status.counts[(suite, method)]
    try:
        where = str(stem.relative_to(out))
    except ValueError:  # a tuned final still awaiting its selection
        where = str(stem)
    if row is None:
        counts["missing"] += 1
        status.missing.append(where)
        return
    if row["status"] in DONE:
        counts["done"] += 1
        counts["diverged"] += row["status"] == "diverged"
    else:
        counts["failed"] += 1
        status.failures.append((where, row["error"] or ""))


def render_status(status: GridStatus, fmt: str = "github") -> str:
    """The grid as a table (done / failed / missing per suite and method), then the failures."""
    from tabulate import tabulate

    rows = [
        [
            suite,
            method,
            c["done"],
            c["diverged"],
            c["failed"],
            c["missing"],
            sum(c[k] for k in ("done", "failed", "missing")),
        ]
        for (suite, method), c in sorted(status.counts.items())
    ]
    lines = [
        tabulate(rows, ["suite", "method", "done", "of which diverged", "failed", "missing", "runs"], tablefmt=fmt)
    ]
    if not status.plans:
        lines.append("\n(no sweep plans in this folder: only the runs on disk are counted, nothing can be missing)")
    if status.set_aside:
        lines.append("\nset aside (kept on disk, not counted):")
        lines += [f"  {reason}" for reason in status.set_aside]
    if status.failures:
        lines.append("\nfailed runs (a rerun of the sweep redoes them):")
        lines += [f"  {where}: {error}" for where, error in status.failures]
    if status.missing:
        lines.append(
            f"\nmissing runs: {len(status.missing)}"
            + ("" if len(status.missing) > 20 else "\n" + "\n".join(f"  {m}" for m in status.missing))
        )
    return "\n".join(lines)
