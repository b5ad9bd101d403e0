"""Versioned, verifiable leaderboards: publish a version, and read and verify one (``initbench.board.compare``
and ``initbench.board.reproduce`` work on what this module publishes).

``publish(results, "v3", root="leaderboard")`` writes ``leaderboard/v3/``:

* ``results.parquet`` / ``curves.parquet``: every results (and curve) file merged, sorted
  by run id (``datasets.load_dataset("parquet", data_files="leaderboard/v3/results.parquet")``);
* ``manifest.json``: suite names with spec hashes (and the spec when it is a built-in
  suite's current one), the initbench version, ``git rev-parse HEAD`` when available, the
  commands that produced the results (given, or reconstructed ``initbench evaluate ...``
  lines), the date, the hardware (the publishing machine and every run's device), the
  statistics' settings and the SHA-256 of the merged results;
* ``curvature.parquet`` (only where ``initbench curvature`` measured a published suite): the
  curvature rows (``initbench.run.curvature_table``), shown as a table per task and a plot, with the
  manifest's ``curvature`` entry (rows, and how often tuning chose a grid's edge per grid kind);
* ``README.md``: a dataset card (``initbench.inputs.dataset_card``: YAML front matter whose ``configs``
  name the Parquet tables, so ``datasets.load_dataset("leaderboard/v3")`` loads the folder), then
  the ranking (``initbench.board.ranking``) and the tables (tabulate ``github``); ``index.html``
  (``initbench.board.leaderboard_page``): one self-contained page that leads with the ranking (one row
  per method, sortable and filterable, with links to each method's paper and code: the
  manifest's ``methods``), then the plots, then every cell (inline CSS/JS; the only other files
  it shows are the PNGs next to it); ``plots/*.png`` (``initbench.board.plots``, only those with data).

A published version is immutable: publishing into an existing version is refused unless
its results are byte-for-byte the same rows (then nothing is written).  The version is
written to a temporary folder and renamed into place (under a lock on the versions folder;
a publish that loses a race for the same version gets a ``PublishError``).
``leaderboard/README.md`` indexes every version and is regenerated on each publish.

Tamper evidence: the manifest records the SHA-256 of every other file of the version, and
``leaderboard/manifests.json`` the manifest's own SHA-256 at publish time (never rewritten).
:func:`verify_version` checks both on every read (``reproduce``, ``compare``, ``initbench
leaderboard leaderboard/vN``): an edited, missing or added file is an error naming it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tabulate import tabulate

from initbench import __version__
from initbench.board import leaderboard
from initbench.board.board import Board
from initbench.board.leaderboard_page import method_notes, render_page
from initbench.board.leaderboard_text import render_board, render_edges
from initbench.core import atomic
from initbench.selection.counted import read_results
from initbench.store.results import (
    CURVE_SCHEMA,
    CURVE_SUFFIX,
    RESULTS_SCHEMA,
    upgrade,
    validate,
    write_atomic,
)

RESULTS_FILE = "results.parquet"
CURVES_FILE = "curves.parquet"
CURVATURE_FILE = "curvature.parquet"  # only when curvature at init was measured for a published suite
MANIFEST_FILE = "manifest.json"
MANIFESTS_FILE = "manifests.json"  # in the versions folder: version -> its manifest's SHA-256
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class PublishError(ValueError):
    """Publishing, comparing or reproducing cannot go on; the message says why."""


def results_digest(table: pa.Table) -> str:
    """SHA-256 of the rows (canonical JSON, sorted by run id and metric): what 'same contents' means."""
    rows = table.sort_by([("run_id", "ascending"), ("metric", "ascending")]).to_pylist()
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def reconstruct_commands(table: pa.Table) -> list[str]:
    """``initbench evaluate`` lines that produce ``table``'s final runs: one per (suite, protocol, seeds,
    execution mode), each prefixed with the ``INITBENCH_*`` settings of the rows' recorded execution
    mode (precision, compile, loss path, torch threads: what ``initbench reproduce`` sets), so that a
    line reruns what the rows record rather than the defaults of the machine it is typed on."""
    from initbench.run.execution import execution_environment

    finals = table.filter(pc.equal(table["phase"], "final"))
    columns = [c for c in ("execution", "torch_threads") if c in finals.column_names]
    runs: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], set[int]] = defaultdict(set)
    for row in finals.select(["suite", "method", "protocol", "seed", *columns]).to_pylist():
        mode = tuple(sorted(execution_environment(row).items()))
        runs[(row["suite"], row["method"], row["protocol"], mode)].add(row["seed"])
    tuned = {(s, m, e) for s, m, p, e in runs if p == "tuned"}
    groups: dict[tuple[str, str, tuple[int, ...], tuple[tuple[str, str], ...]], list[str]] = defaultdict(list)
    for (suite, method, protocol, mode), seeds in sorted(runs.items()):
        if protocol == "fixed" and (suite, method, mode) in tuned:
            continue  # the tuned protocol runs the default rate too
        groups[(suite, protocol, tuple(sorted(seeds)), mode)].append(method)
    lines = []
    for (suite, protocol, seeds, mode), methods in sorted(groups.items()):
        line = "".join(f"{name}={value} " for name, value in mode)
        line += f"initbench evaluate --suite {suite} " + " ".join(f"--method {m}" for m in methods)
        line += f" --seeds {','.join(map(str, seeds))}" + (" --protocol tuned" if protocol == "tuned" else "")
        lines.append(line)
    return lines


def completeness_problems(results: Path, table: pa.Table) -> list[str]:
    """Why ``results`` is not a complete grid: runs its sweeps planned that are missing or failed, or
    a selection awaited (``initbench status``), and for the rows of built-in suites what ``initbench
    validate --contributed`` finds missing or not allowed (``initbench.selection.contributed``)."""
    from initbench.selection.contributed import check_contributed
    from initbench.selection.status import grid_status
    from initbench.spec.suite import SuiteError, load_builtin_suite

    problems = []
    if results.is_dir():
        status = grid_status(results)
        problems += [f"missing run: {m}" for m in status.missing]
        problems += [f"failed run: {where}: {error}" for where, error in status.failures]
    builtin = []
    for name in sorted(set(table["suite"].to_pylist())):
        with contextlib.suppress(SuiteError):
            load_builtin_suite(name)
            builtin.append(name)
    if builtin:
        problems += check_contributed(table.filter(pc.is_in(table["suite"], pa.array(builtin, pa.string()))))
    return problems


def _suites_manifest(table: pa.Table) -> list[dict[str, Any]]:
    from initbench.selection.tuning_grid import tuning_record
    from initbench.spec.suite import SuiteError, load_suite

    out = []
    for name, spec_hash in sorted(set(zip(table["suite"].to_pylist(), table["suite_hash"].to_pylist()))):
        entry: dict[str, Any] = {"name": name, "spec_hash": spec_hash, "builtin": False}
        try:
            suite = load_suite(name)
        except SuiteError:
            suite = None
        if suite is not None:
            entry["builtin"] = True
            entry["builtin_spec_hash"] = suite.spec_hash
            if suite.spec_hash == spec_hash:
                entry["spec"] = suite.spec_dict()
                entry["tuning"] = None if suite.tuning is None else tuning_record(suite.tuning)
        out.append(entry)
    return out


def publish(
    results: Path,
    version: str,
    *,
    root: Path = Path("leaderboard"),
    commands: list[str] | None = None,
    incomplete: bool = False,
) -> Path:
    """Publish the results under ``results`` as ``root/version`` (see the module docstring).  An
    incomplete grid (:func:`completeness_problems`) is refused unless ``incomplete``; then the
    manifest's ``completeness`` and the README say what is missing."""
    results, root = Path(results), Path(root)
    if not _VERSION.match(version or ""):
        raise PublishError(f"--version {version!r}: use a plain folder name such as v1")
    if not results.exists():
        raise PublishError(f"{results}: no such file or folder")
    problems = validate(results)
    if problems:
        raise PublishError(f"{results}: not valid results ({len(problems)} problem(s)), first: {problems[0]}")
    table = read_results(results).sort_by([("run_id", "ascending"), ("metric", "ascending")])
    if table.num_rows == 0:
        raise PublishError(f"{results}: no results to publish")
    curves = read_results(results, CURVE_SUFFIX).sort_by([("run_id", "ascending"), ("step", "ascending")])
    digest = results_digest(table)
    target = root / version
    if target.exists():
        existing = _published_digest(target)
        if existing == digest:
            return target  # the same contents: nothing to do
        raise PublishError(
            f"{target} is already published with other contents (results sha256 "
            f"{(existing or 'unknown')[:12]} != {digest[:12]}); published versions are immutable: "
            f"publish as a new version"
        )
    gaps = completeness_problems(results, table)
    if gaps and not incomplete:
        raise PublishError(
            f"{results}: not a complete grid ({len(gaps)} problem(s)), first: {gaps[0]}; finish it (`initbench "
            "status` and `initbench validate --contributed` name what is missing), or publish it with --incomplete "
            "(the manifest and the README then say so)"
        )
    curvature = _curvature_rows(results, table)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=root))
    try:
        write_atomic(table, staging / RESULTS_FILE, "results")
        write_atomic(curves, staging / CURVES_FILE, "curve")
        if curvature.num_rows:
            write_atomic(curvature, staging / CURVATURE_FILE, "curvature")
        board = leaderboard.build(table, curves, curvature)
        plots_dir = staging / "plots"
        from initbench.board.plots import write_plots

        plots = [p.relative_to(staging).as_posix() for p in write_plots(board, curves, plots_dir)]
        manifest = {
            "version": version,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "initbench_version": __version__,
            "git_commit": _git_commit(),
            "commands": list(commands) if commands else reconstruct_commands(table),
            "commands_source": "given" if commands else "reconstructed from the rows",
            "suites": _suites_manifest(table),
            "hardware": {
                "publisher": {
                    "machine": platform.machine(),
                    "system": platform.platform(),
                    "python": platform.python_version(),
                },
                "runs": sorted(set(zip(table["device"].to_pylist(), table["device_name"].to_pylist())), key=str),
            },
            "results": {
                "file": RESULTS_FILE,
                "rows": table.num_rows,
                "runs": len(set(table["run_id"].to_pylist())),
                "sha256": digest,
            },
            "curves": {"file": CURVES_FILE, "rows": curves.num_rows},
            "set_aside": _set_aside(results),
            "completeness": {"complete": not gaps, "problems": len(gaps), "first_problems": gaps[:50]},
            "statistics": {
                "per_task_interval": f"95% percentile bootstrap of the mean over seeds, {leaderboard.BOOTSTRAP_REPS} "
                "resamples, seeded",
                "normalization": f"floor = {leaderboard.FLOOR_METHOD} mean; ceiling = the best mean of any other row "
                "(full-ft included), per task (primary metric)",
                "aggregate": f"IQM with 95% stratified bootstrap CI, {leaderboard.IQM_REPS} resamples",
                "pairwise": f"vs {leaderboard.REFERENCE_METHOD}: probability of improvement; Wilcoxon signed-rank paired "
                f"by (seed, task), Holm-corrected, alpha {leaderboard.ALPHA}",
                "convergence": f"loss AUC; steps until EMA(0.1) loss <= {leaderboard.CONVERGENCE_FRACTION} x "
                f"{leaderboard.REFERENCE_METHOD}'s mean final EMA loss",
            },
            "plots": plots,
            "methods": method_notes(sorted(set(table["method"].to_pylist()))),
        }
        tables = render_board(board, "github", level=2)
        if curvature.num_rows:
            from initbench.selection.tuning_grid import edge_report

            edges = edge_report(results) if results.is_dir() else []
            manifest["curvature"] = {"file": CURVATURE_FILE, "rows": curvature.num_rows, "edges": edges}
            if edges:
                tables += "\n\n" + render_edges(edges)
        from initbench.board.ranking import render_ranking

        ranking = "\n\n".join(
            f"## Ranking: suite `{e.suite}` (spec {e.suite_hash})\n\n{render_ranking(e)}"
            for e in board.suites
            if e.main
        )
        (staging / "README.md").write_text(_version_readme(manifest, tables, ranking))
        (staging / "index.html").write_text(_index_html(manifest, board))
        manifest["files"] = {
            p.relative_to(staging).as_posix(): file_sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
        with _root_lock(root):
            try:
                os.rename(staging, target)
            except OSError:  # another publish of this version won the race
                if target.exists() and _published_digest(target) == digest:
                    return target
                raise PublishError(
                    f"{target} was published by another process meanwhile, with other contents; "
                    "published versions are immutable: publish as a new version"
                ) from None
            _record_manifest(root, version, file_sha256(target / MANIFEST_FILE))
            write_index(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _curvature_rows(results: Path, table: pa.Table) -> pa.Table:
    """The curvature measurements under ``results`` (``initbench.run.curvature_table``) of the (suite, spec
    hash) pairs ``table`` publishes, sorted; an empty table when there are none."""
    from initbench.run.curvature_table import SCHEMA, read_table

    if not results.is_dir():  # a single results file: no measurements beside it
        return SCHEMA.empty_table()
    measured = read_table(results)
    published = set(zip(table["suite"].to_pylist(), table["suite_hash"].to_pylist()))
    keep = [(s, h) in published for s, h in zip(measured["suite"].to_pylist(), measured["suite_hash"].to_pylist())]
    return measured.filter(pa.array(keep, pa.bool_())).sort_by(
        [(k, "ascending") for k in ("suite", "suite_hash", "task", "method", "seed")]
    )


def read_curvature(path: Path) -> tuple[pa.Table | None, list[dict[str, Any]]]:
    """The curvature measurements a published version holds (None when it has none) and its edge
    report (``initbench.selection.tuning_grid.edge_report`` at publish time), after :func:`verify_version`."""
    from initbench.run.curvature_table import SCHEMA

    manifest = verify_version(Path(path))
    if CURVATURE_FILE not in manifest["files"]:
        return None, []
    return (
        pq.read_table(Path(path) / CURVATURE_FILE, schema=SCHEMA),
        (manifest.get("curvature") or {}).get("edges") or [],
    )


def _set_aside(results: Path) -> list[dict[str, str]]:
    """The superseded tuned finals left out of the version (run id and why), for the manifest."""
    from initbench.selection.protocol import superseded

    stale = superseded(results) if results.is_dir() else {}
    return [{"run_id": run_id, "reason": reason} for run_id, reason in sorted(stale.items())]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _published_digest(target: Path) -> str | None:
    try:
        return json.loads((target / MANIFEST_FILE).read_text()).get("results", {}).get("sha256")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _root_lock(root: Path):
    """Serialize the last step of publishes into one root (rename, hash record, index): an
    exclusive ``flock`` on the versions folder itself, so no lock file is left in it."""
    import fcntl

    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _record_manifest(root: Path, version: str, sha256: str) -> None:
    """Add ``version``'s manifest hash to ``root/MANIFESTS_FILE`` (never rewriting an entry): the
    anchor that makes an edited manifest evident (commit it with the versions)."""
    path = Path(root) / MANIFESTS_FILE
    recorded = json.loads(path.read_text()) if path.exists() else {}
    recorded.setdefault(version, sha256)
    atomic.write_json(path, recorded)


def verify_version(path: Path) -> dict[str, Any]:
    """Check every file of the published version at ``path`` against the SHA-256 its manifest
    records, and the manifest against the hash recorded at publish time in the versions folder
    (``MANIFESTS_FILE``); returns the manifest.  Any mismatch, missing file or unreadable
    manifest is a ``PublishError`` naming the file: a published version must not be edited."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    fix = "restore the version from version control (published versions are immutable)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise PublishError(f"{manifest_path}: not a readable manifest ({err}); {fix}") from None
    anchor = path.parent / MANIFESTS_FILE
    recorded = json.loads(anchor.read_text()).get(path.name) if anchor.exists() else None
    if recorded is not None and recorded != file_sha256(manifest_path):
        raise PublishError(
            f"{manifest_path}: sha256 {file_sha256(manifest_path)[:16]} differs from the one recorded "
            f"at publish time in {anchor} ({recorded[:16]}): the manifest was edited; {fix}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not {RESULTS_FILE, CURVES_FILE} <= set(files):
        raise PublishError(
            f"{manifest_path}: no 'files' with the SHA-256 of {RESULTS_FILE} and {CURVES_FILE} "
            f"(published before versions were hashed, or edited); republish it as a new version"
        )
    extra = sorted(
        p.relative_to(path).as_posix()
        for p in path.rglob("*")
        if p.is_file() and p.relative_to(path).as_posix() not in files and p.name != MANIFEST_FILE
    )
    if extra:
        raise PublishError(
            f"{path / extra[0]}: not a file of the published version (not in {manifest_path}); "
            f"remove it ({len(extra)} such file(s))"
        )
    for name, expected in sorted(files.items()):
        file = path / name
        if not file.is_file():
            raise PublishError(f"{file}: listed in {manifest_path} but missing; {fix}")
        if file_sha256(file) != expected:
            raise PublishError(
                f"{file}: sha256 {file_sha256(file)[:16]} differs from {expected[:16]} recorded in "
                f"{manifest_path}: the file was edited; {fix}"
            )
    return manifest


def read_version(path: Path) -> tuple[pa.Table, pa.Table]:
    """The results and curves of a published version, after :func:`verify_version`."""
    path = Path(path)
    verify_version(path)
    return (
        upgrade(pq.read_table(path / RESULTS_FILE), RESULTS_SCHEMA),
        upgrade(pq.read_table(path / CURVES_FILE), CURVE_SCHEMA),
    )


def is_version(path: Path) -> bool:
    """Whether ``path`` is a published version folder (it has a manifest)."""
    return (Path(path) / MANIFEST_FILE).is_file()


def _version_readme(manifest: dict, tables: str, ranking: str) -> str:
    """The version's README: the dataset card's front matter (``initbench.inputs.dataset_card``), then the
    ranking, the tables and the plots for a human reader."""
    from initbench.inputs.dataset_card import front_matter

    suites = ", ".join(f"`{s['name']}` (spec {s['spec_hash']})" for s in manifest["suites"])
    commands = "\n".join(manifest["commands"])
    plots = "\n".join(f"![{Path(p).stem}]({p})" for p in manifest["plots"])
    configs = {"results": RESULTS_FILE, "curves": CURVES_FILE}
    if manifest.get("curvature"):
        configs["curvature"] = CURVATURE_FILE
    return (
        front_matter(manifest["version"], configs, manifest["results"]["rows"])
        + f"# initbench leaderboard {manifest['version']}\n\n"
        f"Published {manifest['date']} with initbench {manifest['initbench_version']}"
        f"{' at commit ' + manifest['git_commit'] if manifest['git_commit'] else ''}. Suites: {suites}. "
        f"{manifest['results']['runs']} runs, {manifest['results']['rows']} rows "
        f"(`{RESULTS_FILE}`, sha256 `{manifest['results']['sha256'][:16]}`).\n\n"
        + _incomplete_note(manifest)
        + f"Produced by ({manifest['commands_source']}):\n\n```\n{commands}\n```\n\n"
        f"Reproduce a sample: `initbench reproduce leaderboard/{manifest['version']} --runs 3 --seed 0`. "
        f'Load the rows: `datasets.load_dataset("leaderboard/{manifest["version"]}")` (this folder, or the '
        f"hub id it is pushed to; `results` by default, `name=` one of {', '.join(f'`{c}`' for c in configs)}).\n\n"
        + (f"{ranking}\n\n" if ranking else "")
        + f"{tables}\n"
        + (f"\n## Plots\n\n{plots}\n" if plots else "")
    )


def _incomplete_note(manifest: dict) -> str:
    """A paragraph saying the grid was published incomplete (``--incomplete``), or nothing."""
    completeness = manifest.get("completeness") or {"complete": True}
    if completeness["complete"]:
        return ""
    first = "; ".join(completeness["first_problems"][:3])
    return (
        f"**Incomplete grid** (published with `--incomplete`): {completeness['problems']} problem(s), listed in "
        f"`manifest.json` (`completeness`); the first: {first}.\n\n"
    )


def _index_html(manifest: dict, board: Board) -> str:
    """The version's ``index.html`` (``initbench.board.leaderboard_page``), listing the version's files."""
    files = [
        (
            RESULTS_FILE,
            f"{manifest['results']['rows']:,} rows, {manifest['results']['runs']:,} runs: every metric of every run",
        ),
        (CURVES_FILE, f"{manifest['curves']['rows']:,} rows: training-loss curves"),
    ]
    if manifest.get("curvature"):
        files.append((CURVATURE_FILE, f"{manifest['curvature']['rows']:,} rows: curvature at init"))
    files += [
        (MANIFEST_FILE, "how it was made: specs, commands, hardware, SHA-256 of every file"),
        ("README.md", "every table as Markdown (the dataset card)"),
    ]
    return render_page(manifest, board, files)


def write_index(root: Path) -> Path:
    """``root/README.md``: every published version (from its manifest), newest first."""
    lines = []
    for manifest_path in sorted(Path(root).glob(f"*/{MANIFEST_FILE}")):
        m = json.loads(manifest_path.read_text())
        lines.append(
            [
                f"[{m['version']}]({m['version']}/README.md)",
                m["date"],
                ", ".join(f"{s['name']} ({s['spec_hash']})" for s in m["suites"]),
                m["results"]["runs"],
                m["initbench_version"],
                (m.get("git_commit") or "")[:12],
                m["results"]["sha256"][:16],
            ]
        )
    lines.sort(key=lambda line: line[1], reverse=True)
    text = (
        "# initbench leaderboards\n\nEvery published version (immutable; regenerated by "
        "`initbench leaderboard publish`). Compare two with `initbench leaderboard compare vA vB`.\n\n"
        + tabulate(
            lines, ["version", "date", "suites", "runs", "initbench", "commit", "results sha256"], tablefmt="github"
        )
        + "\n"
    )
    path = Path(root) / "README.md"
    path.write_text(text)
    return path


def version_dir(version: str | Path, root: Path) -> Path:
    """A published version's folder: ``version`` as a path, else ``root/version`` (``PublishError`` if neither)."""
    path = Path(version)
    if not (path / MANIFEST_FILE).exists():
        path = Path(root) / str(version)
    if not (path / MANIFEST_FILE).exists():
        raise PublishError(f"{version}: no published version there (no {MANIFEST_FILE} in {path})")
    return path
