"""``initbench reproduce VERSION``: rerun runs drawn at random from a published version and compare
every recorded value, to the last digit, in the execution mode each was published with."""

from __future__ import annotations

import random
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from tabulate import tabulate

from initbench.board.publish import MANIFEST_FILE, PublishError, is_version, read_version
from initbench.store.results import read_file

#: the columns a rerun must record exactly as the published run did (besides every metric's value)
RERUN_COLUMNS = (
    "status",
    "data_hash",
    "lora_rank",
    "learning_rate",
    "optimizer_steps",
    "train_tokens",
    "calibration_examples",
    "trainable_params",
    "total_params",
    "forgetting_set",  # forgetting is a published number (the ranking's column): held set and KL, exactly
    "forgetting_kl",
)


def reproduce(
    version_dir: Path, *, runs: int = 1, seed: int = 0, out: Path | None = None, same_cpu: bool = False
) -> tuple[str, bool]:
    """Re-run ``runs`` runs drawn at random (``random.Random(seed)``) from the recorded rows of a
    published version (after :func:`verify_version`) in a temporary folder, each in the execution mode
    it was published with (precision, compile, loss path); per run and metric, whether the value
    matches to the last digit, and whether the rerun spent and recorded ``RERUN_COLUMNS`` exactly as
    published (any difference or missing row: not a match).  Where anything differs, a line names
    which parts of the code identity (``initbench.core.provenance``) differ.

    ``same_cpu``: draw only among the runs computed on this machine's CPU identity
    (``provenance.same_cpu``: other CPUs choose other kernels, so their values are not expected to
    match bit for bit); when there is none, nothing is rerun and the report says so (a match: there
    is nothing this machine can check exactly)."""
    from initbench.core import provenance
    from initbench.method.registry import PluginError, get_method
    from initbench.run import execution
    from initbench.run.harness import run_one
    from initbench.spec.suite import SuiteError, load_suite

    version_dir = Path(version_dir)
    if not is_version(version_dir):
        raise PublishError(f"{version_dir}: not a published version (no {MANIFEST_FILE})")
    table, _ = read_version(version_dir)
    by_run: dict[str, list[dict]] = defaultdict(list)
    for row in table.to_pylist():
        by_run[row["run_id"]].append(row)
    run_ids = sorted(by_run)
    if runs < 1:
        raise PublishError("--runs must be at least 1")
    if same_cpu:
        total = len(run_ids)
        run_ids = [run_id for run_id in run_ids if provenance.same_cpu(by_run[run_id][0])]
        if not run_ids:
            return _no_run_on_this_cpu(version_dir, total, by_run), True
    chosen = random.Random(seed).sample(run_ids, min(runs, len(run_ids)))
    _check_local_data([by_run[run_id][0] for run_id in chosen])
    lines, all_match = [], True
    with tempfile.TemporaryDirectory(prefix="initbench-reproduce-") as tmp:
        scratch = Path(out) if out else Path(tmp)
        for run_id in chosen:
            rows = by_run[run_id]
            r = rows[0]
            try:
                suite = load_suite(r["suite"])
                method = get_method(r["method"])
                task = suite.task(r["task"])
            except (SuiteError, PluginError) as err:
                lines.append([run_id, "", "", "", f"cannot rerun: {err}"])
                all_match = False
                continue
            if suite.spec_hash != r["suite_hash"]:
                lines.append(
                    [
                        run_id,
                        "",
                        "",
                        "",
                        f"cannot rerun: suite spec is now {suite.spec_hash}, published {r['suite_hash']}",
                    ]
                )
                all_match = False
                continue
            overridden = r["protocol"] == "tuned" or r["phase"] == "trial"
            with execution.rerun_environment(r):  # the published precision, compile and loss path
                outcome = run_one(
                    suite,
                    method,
                    task,
                    r["seed"],
                    scratch,
                    force=True,
                    lr=r["learning_rate"] if overridden else None,
                    split=r["eval_split"] or "test",
                    protocol=r["protocol"],
                    selected_lr=r["selected_lr"],
                )
            rerun = read_file(outcome.path).to_pylist()
            new = {x["metric"]: x["value"] for x in rerun}
            first_line = len(lines)
            for column in RERUN_COLUMNS:  # what a rerun must spend and record exactly like the published run
                if not _same(r[column], rerun[0][column]):
                    lines.append([run_id, column, repr(r[column]), repr(rerun[0][column]), "differs"])
                    all_match = False
            for metric in sorted(set(new) - {row["metric"] for row in rows} - {None}):
                lines.append([run_id, metric, "(no row)", repr(new[metric]), "missing from the published rows"])
                all_match = False
            for row in rows:
                if row["metric"] is None:
                    continue
                old_v, new_v = row["value"], new.get(row["metric"])
                same = _same(old_v, new_v)
                verdict = (
                    "exact match" if same else ("missing" if new_v is None else f"differs by {new_v - old_v:+.3e}")
                )
                all_match &= same
                lines.append([run_id, row["metric"], repr(old_v), repr(new_v), verdict])
            if any(line[4] != "exact match" for line in lines[first_line:]):  # issue 13: name what differs
                lines.append([run_id, "code identity", "", "", provenance.explain(r, rerun[0])])
    header = f"reproduced {len(chosen)} of {len(run_ids)} runs of {version_dir} (draw seed {seed}): " + (
        "every value matches exactly" if all_match else "SOME VALUES DIFFER"
    )
    return header + "\n\n" + tabulate(
        lines, ["run", "metric", "published", "reproduced", "verdict"], tablefmt="github", disable_numparse=True
    ), all_match


def _no_run_on_this_cpu(version_dir: Path, total: int, by_run: dict[str, list[dict]]) -> str:
    """The report of ``reproduce(..., same_cpu=True)`` when no run was computed on this machine's CPU."""
    from initbench.core import provenance

    def name(identity: dict[str, Any]) -> str:
        return f"{identity['cpu_model']} (flags {identity['cpu_flags']}; torch {identity['cpu_capability']})"

    published = sorted({name(rows[0]) for rows in by_run.values() if rows[0].get("cpu_model") is not None})
    return (
        f"reproduced 0 of {total} runs of {version_dir}: none was computed on this machine's CPU, "
        f"{name(provenance.cpu_identity())}; they were computed on {', '.join(published) or 'unrecorded CPUs'}. "
        "Other CPUs choose other kernels, so their values are not expected to match bit for bit here: "
        "nothing to check exactly on this machine (without --same-cpu the runs are rerun and compared anyway)"
    )


def _same(published: object, rerun: object) -> bool:
    """Equal to the last digit (a NaN equals a NaN: both runs recorded no number the same way)."""
    return published == rerun or (published != published and rerun != rerun)


def _check_local_data(rows: list[dict]) -> None:
    """Before any compute: a run that read its forgetting held set from a local copy (``LOCAL_SOURCE``
    in ``forgetting_set``, as ``initbench.inputs.datasets_io`` names it) is rerun only with a data directory, else its forgetting would be missing."""
    from initbench.inputs.datasets_io import LOCAL_SOURCE, data_dir

    local = [r for r in rows if f" {LOCAL_SOURCE}" in (r.get("forgetting_set") or "")]
    if local and data_dir()[0] is None:
        raise PublishError(
            f"run {local[0]['run_id']} measured its forgetting on a local copy of its held set "
            f"({local[0]['forgetting_set']}); set INITBENCH_DATA_DIR (e.g. ../shared/data) to the folder "
            "that holds it and rerun"
        )
