"""Publishing a versioned leaderboard on `smoke`: artifacts, immutability, compare, reproduce, stats, HTML."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from _trees import synthetic_row

from initbench.board import leaderboard, stats
from initbench.board.compare import compare
from initbench.board.leaderboard_text import render_board
from initbench.board.publish import PublishError, publish, reconstruct_commands
from initbench.board.reproduce import reproduce
from initbench.cli import main
from initbench.selection.counted import read_results
from initbench.store.results import RESULTS_SCHEMA


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """base (fixed) and lora (tuned + default rate) on both smoke tasks, seeds 0 and 1."""
    import os

    out = tmp_path_factory.mktemp("runs") / "runs"
    cache = tmp_path_factory.getbasetemp() / "initbench-cache"
    old = os.environ.get("INITBENCH_CACHE")
    os.environ["INITBENCH_CACHE"] = str(cache)
    try:
        assert (
            main(
                [
                    "evaluate",
                    "--suite",
                    "smoke",
                    "--method",
                    "base",
                    "--method",
                    "lora",
                    "--seeds",
                    "0,1",
                    "--protocol",
                    "tuned",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
    finally:
        if old is None:
            os.environ.pop("INITBENCH_CACHE", None)
        else:
            os.environ["INITBENCH_CACHE"] = old
    return out


@pytest.fixture(scope="module")
def published(runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("board") / "leaderboard"
    return publish(runs, "v1", root=root), root


def test_publish_writes_every_artifact(published, runs):
    target, root = published
    names = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    plots = {"scores", "aggregate", "lr-sensitivity", "loss-curves"}
    assert {"results.parquet", "curves.parquet", "manifest.json", "README.md", "index.html"} <= names
    assert {p for p in names if p.startswith("plots/")} == {f"plots/smoke-{p}.png" for p in plots}  # one method
    # beside the base reference: no cost trade-off, so no Pareto plot (rather than one without a front)
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["suites"][0]["spec_hash"] == manifest["suites"][0]["builtin_spec_hash"]
    assert manifest["suites"][0]["tuning"] == {"lr_grid": [0.001, 0.01, 0.1], "seeds": [0]}
    threads = read_results(runs)["torch_threads"][0].as_py()
    mode = f"INITBENCH_COMPILE=0 INITBENCH_FAST=0 INITBENCH_PRECISION=float32 INITBENCH_THREADS={threads} "
    assert mode + "initbench evaluate --suite smoke --method lora --seeds 0,1 --protocol tuned" in manifest["commands"]
    assert mode + "initbench evaluate --suite smoke --method base --seeds 0,1" in manifest["commands"]
    assert manifest["date"] and manifest["hardware"]["runs"] and manifest["initbench_version"]
    assert manifest["results"]["runs"] == 6 + 4 + 4 + 4  # trials, tuned finals, lora default, base
    readme = (target / "README.md").read_text()
    assert "Tuned protocol" in readme and "At the suite's default learning rate" in readme
    assert "Tuning trials" in readme and "Convergence" in readme and "Cost" in readme and "IQM" in readme
    assert "v1" in (root / "README.md").read_text()
    html = (target / "index.html").read_text()  # offline: nothing loaded from elsewhere (links out are anchors)
    assert not re.search(r"""(src|srcset)=["']?(https?:)?//|<link|@import|url\(|fetch\(""", html)
    import matplotlib.image

    for p in plots:
        image = matplotlib.image.imread(target / f"plots/smoke-{p}.png")
        assert image.shape[0] > 100 and image.std() > 0
    import datasets

    loaded = datasets.load_dataset(
        "parquet", data_files=str(target / "results.parquet"), split="train", cache_dir=str(root.parent / "hf-cache")
    )
    assert loaded.num_rows == read_results(runs).num_rows
    assert main(["validate", str(runs)]) == 0


def test_reconstructed_commands_carry_each_execution_mode():
    """A command rebuilt from the rows sets the precision, loss path, compile and threads the rows
    record (what ``reproduce`` sets): runs made in two modes give two lines, never one that reruns
    either in the defaults of whoever types it."""
    bf16 = '{"autocast": "bf16", "compile": false, "fused_adamw": false, "loss": "labelled-positions"}'
    fp32 = '{"autocast": null, "compile": false, "fused_adamw": false, "loss": "full-logits"}'
    rows = [synthetic_row("lora", "t", seed, 0.5, execution=bf16, torch_threads=1) for seed in (0, 1)] + [
        synthetic_row("pissa", "t", 0, 0.5, execution=fp32, torch_threads=2)
    ]
    assert reconstruct_commands(pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA)) == [
        "INITBENCH_COMPILE=0 INITBENCH_FAST=0 INITBENCH_PRECISION=float32 INITBENCH_THREADS=2 "
        "initbench evaluate --suite s --method pissa --seeds 0",
        "INITBENCH_COMPILE=0 INITBENCH_FAST=1 INITBENCH_PRECISION=bf16-autocast INITBENCH_THREADS=1 "
        "initbench evaluate --suite s --method lora --seeds 0,1",
    ]


def test_a_published_version_is_immutable(published, runs, tmp_path, capsys):
    target, root = published
    assert publish(runs, "v1", root=root) == target  # identical contents: accepted, nothing rewritten
    partial = tmp_path / "partial"
    shutil.copytree(runs / "smoke" / "base", partial / "smoke" / "base")
    with pytest.raises(PublishError, match="already published with other contents"):
        publish(partial, "v1", root=root)
    assert main(["leaderboard", "publish", str(partial), "--version", "v1", "--root", str(root)]) == 2
    assert "immutable" in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == ["README.md", "manifests.json", "v1"]  # no staging folder left


def test_compare_two_versions(published, runs, tmp_path, capsys):
    _, root = published
    fewer = tmp_path / "fewer"
    shutil.copytree(runs, fewer)
    for path in (fewer / "smoke" / "lora").rglob("seed1-*"):
        path.unlink()
    with pytest.raises(PublishError, match=r"not a complete grid .*missing run: smoke/lora/.*--incomplete"):
        publish(fewer, "v2", root=root)  # lora's seed 1 is gone: refused unless asked for
    publish(
        fewer, "v2", root=root, commands=["initbench evaluate --suite smoke --method lora --seeds 0"], incomplete=True
    )
    completeness = json.loads((root / "v2" / "manifest.json").read_text())["completeness"]
    assert not completeness["complete"] and completeness["problems"] >= 2
    assert "**Incomplete grid** (published with `--incomplete`)" in (root / "v2" / "README.md").read_text()
    assert json.loads((root / "v1" / "manifest.json").read_text())["completeness"]["complete"]
    assert "Incomplete" not in (root / "v1" / "README.md").read_text()
    text = compare("v1", "v2", root=root)
    assert "rank v1" in text and "rank v2" in text and "| smoke   | lora" in text and "| smoke   | base" in text
    assert json.loads((root / "v2" / "manifest.json").read_text())["commands_source"] == "given"
    index = (root / "README.md").read_text()
    assert "[v1]" in index and "[v2]" in index
    assert main(["leaderboard", "compare", "v1", "v2", "--root", str(root)]) == 0
    assert "IQM change" in capsys.readouterr().out


def test_reproduce_a_published_version_matches_exactly(published, capsys):
    target, _ = published
    report, ok = reproduce(target, runs=2, seed=3)
    assert ok, report
    assert report.count("exact match") >= 2
    assert main(["reproduce", str(target), "--runs", "1", "--seed", "5", "--same-cpu"]) == 0
    assert "every value matches exactly" in capsys.readouterr().out  # made on this machine: drawn and rerun


def test_validate_names_missing_seeds(runs, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(runs, broken)
    for path in (broken / "smoke" / "base" / "addition").glob("seed1-*"):
        path.unlink()
    assert main(["validate", str(broken)]) == 0  # the schema alone is fine
    assert main(["validate", "--contributed", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "method 'base'" in out and "fixed runs (task, seed): addition seed 1" in out


def _synthetic() -> pa.Table:
    rng = np.random.default_rng(0)
    rows = []
    means = {"base": 0.1, "lora": 0.5, "better": 0.7, "same": 0.5}
    for method, mu in means.items():
        for t, task in enumerate(["t1", "t2"]):
            for seed in range(5):
                value = mu + 0.1 * t + (0.0 if method == "base" else 0.01 * rng.standard_normal())
                if method == "better":
                    value = means["lora"] + 0.1 * t + 0.2 + 0.001 * seed
                rows.append(synthetic_row(method, task, seed, value))
    return pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA)


def test_statistics_in_the_rendered_table():
    table = _synthetic()
    board = leaderboard.build(table)
    block = board.suites[0].protocols["fixed"]
    cell = next(c for c in block.cells if c.method == "lora" and c.task == "t1")
    values = [r["value"] for r in table.to_pylist() if r["method"] == "lora" and r["task"] == "t1"]
    assert cell.mean == pytest.approx(np.mean(values)) and cell.std == pytest.approx(np.std(values, ddof=1))
    lo, hi = stats.bootstrap_ci(values, method="percentile")
    assert cell.ci_low == pytest.approx(lo, abs=0.004) and cell.ci_high == pytest.approx(hi, abs=0.004)
    aggregate = {r.method: r for r in block.aggregate}
    assert aggregate["base"].iqm == pytest.approx(0.0)  # the floor
    assert aggregate["better"].iqm == pytest.approx(1.0, abs=0.01)  # the best method is the ceiling
    assert aggregate["better"].iqm_low <= aggregate["better"].iqm <= aggregate["better"].iqm_high
    pairwise = {r.method: r for r in block.pairwise}
    assert pairwise["better"].significant and pairwise["better"].poi == 1.0
    assert not pairwise["same"].significant
    text = render_board(board)
    assert "[" in text and "(n=5)" in text and "IQM" in text and "ceiling = t1: better" in text
    better_line = next(line for line in text.splitlines() if line.startswith("| better") and "*" in line)
    assert "1.000" in better_line


def test_index_html_renders_in_headless_chromium(published, tmp_path):
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the HTML page was not rendered")
    target, _ = published
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,800",
            (target / "index.html").resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=90,
    )
    import matplotlib.image

    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (800, 1200)
    colours = np.unique(image.reshape(-1, image.shape[-1]), axis=0)
    assert len(colours) > 10  # text, table stripes and header: not a blank page


def test_diagnostics_table_appears_only_with_diagnostics():
    table = _synthetic()
    assert "Rich or lazy" not in render_board(leaderboard.build(table))
    rows = table.to_pylist()
    for r in rows:
        if r["method"] == "lora":
            r.update(
                trainable_params=1000,
                base_weights_modified=False,
                init_update_erank=0.0,
                final_update_erank=2.0 + r["seed"],
                relative_weight_change=0.01,
            )
    board = leaderboard.build(pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA))
    (diag,) = board.suites[0].diagnostics
    assert diag.method == "lora" and diag.runs == 10 and diag.final_update_erank == pytest.approx(4.0)
    text = render_board(board)
    assert "Rich or lazy" in text and "| lora " in text.split("Rich or lazy")[1]


def test_reproduce_names_what_of_the_code_identity_differs(runs, tmp_path):
    """Issue 13: a value that does not reproduce comes with the code identity columns that differ.
    The rows are edited before publishing (an edited published file is refused as tampered)."""
    import pyarrow.parquet as pq

    edited = tmp_path / "runs"
    shutil.copytree(runs, edited)
    for path in edited.rglob("*.results.parquet"):
        table = pq.read_table(path)
        rows = [
            {
                **r,
                "value": None if r["value"] is None else 1.0 - r["value"],
                "code_commit": "0" * 40,
                "cpu_flags": "avx2",
            }
            for r in table.to_pylist()
        ]
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    copy = publish(edited, "v1", root=tmp_path / "board", incomplete=True)  # the edits made its selections stale
    report, ok = reproduce(copy, runs=1, seed=3)
    assert not ok
    line = next(line for line in report.splitlines() if "code identity" in line)
    assert "code_commit: '0000000000000000000000000000000000000000' -> " in line and "cpu_flags: 'avx2' -> " in line
    # --same-cpu (CI's guard): no run was made on this CPU identity, so nothing is rerun and nothing fails
    report, ok = reproduce(copy, runs=1, seed=3, same_cpu=True)
    assert ok and report.startswith("reproduced 0 of ") and "none was computed on this machine's CPU" in report
    assert "(flags avx2;" in report and "exact match" not in report
