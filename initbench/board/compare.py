"""``initbench leaderboard compare A B``: rank and score (IQM across tasks) of every method in two
published versions, and the change from A to B."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tabulate import tabulate

from initbench.board import leaderboard
from initbench.board.publish import read_version, version_dir


def _standings(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(suite, method) -> rank and score on the version's main protocol (IQM of normalized scores)."""
    table, _ = read_version(path)
    board = leaderboard.build(table, None)
    out = {}
    for entry in board.suites:
        if entry.main is None:
            continue
        for rank, r in enumerate(entry.protocols[entry.main].aggregate, start=1):
            out[(entry.suite, r.method)] = {
                "rank": rank,
                "iqm": r.iqm,
                "spec": entry.suite_hash,
                "protocol": entry.main,
            }
    return out


def compare(version_a: str, version_b: str, *, root: Path = Path("leaderboard"), fmt: str = "github") -> str:
    """Per (suite, method): rank and score (IQM) in each version and the change from A to B."""
    a_dir, b_dir = version_dir(version_a, root), version_dir(version_b, root)
    a, b = _standings(a_dir), _standings(b_dir)
    lines = []
    for key in sorted(set(a) | set(b)):
        ra, rb = a.get(key), b.get(key)
        rank_change = "" if not (ra and rb) else f"{ra['rank'] - rb['rank']:+d}"  # positive: moved up
        score_change = "" if not (ra and rb) else f"{rb['iqm'] - ra['iqm']:+.4f}"
        lines.append(
            [
                key[0],
                key[1],
                ra["rank"] if ra else "new" if rb else "",
                rb["rank"] if rb else "gone",
                rank_change,
                f"{ra['iqm']:.4f}" if ra else "",
                f"{rb['iqm']:.4f}" if rb else "",
                score_change,
            ]
        )
    specs = {v: sorted({(k[0], s["spec"]) for k, s in d.items()}) for v, d in ((version_a, a), (version_b, b))}
    note = (
        ""
        if specs[version_a] == specs[version_b]
        else (
            f"\n\nNote: suite spec hashes differ between versions ({specs[version_a]} vs {specs[version_b]}); "
            "scores are not comparable across different specs."
        )
    )
    return (
        f"{a_dir.name} -> {b_dir.name} (rank by IQM across tasks; rank change > 0: moved up)\n\n"
        + tabulate(
            lines,
            [
                "suite",
                "method",
                f"rank {a_dir.name}",
                f"rank {b_dir.name}",
                "rank change",
                f"IQM {a_dir.name}",
                f"IQM {b_dir.name}",
                "IQM change",
            ],
            tablefmt=fmt,
        )
        + note
    )
