"""Issue 17 in the published leaderboard: curvature rows copied into the version (hashed like every
file), a table per task, the chosen-rate-vs-1/lambda_max plot and the edge report; synthetic `smoke`
rows, no training."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from _trees import tuned_tree, write_curvature

from initbench.board.leaderboard_text import render
from initbench.board.publish import CURVATURE_FILE, PublishError, file_sha256, publish, verify_version
from initbench.cli import main

CHOSEN = {"lora": 0.01, "pissa": 0.001, "olora": 0.001, "milora": 0.1}  # on the grid 0.001, 0.01, 0.1
LAMBDA = {"lora": 1.0, "pissa": 8.0, "olora": 12.0, "milora": 0.15}


def _tree(out, curvature: bool = True):
    tuned_tree(out, {(m, t): lr for m, lr in CHOSEN.items() for t in ("addition", "compare_sums")})
    if curvature:
        for method, lam in LAMBDA.items():
            for task in ("addition", "compare_sums"):
                write_curvature(out, method, task, 0, lam, converged=method != "milora")
        write_curvature(out, "lora", "addition", 0, 5.0, suite_hash="0" * 16)  # another spec: not published
    return out


@pytest.fixture
def version(tmp_path):
    root = tmp_path / "board"
    return publish(_tree(tmp_path / "runs"), "v1", root=root), root


def _task_table(readme: str, task: str) -> dict[str, list[str]]:
    section = readme.split(f"Curvature at init, task `{task}`")[1].split("fit of log")[0]
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| ") and "method" not in line
    ]
    return {r[0]: r[1:] for r in rows}


def test_publish_with_curvature_shows_the_table_the_plot_and_hashes_the_rows(version):
    target, _ = version
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["files"][CURVATURE_FILE] == file_sha256(target / CURVATURE_FILE)
    copied = pq.read_table(target / CURVATURE_FILE)
    assert copied.num_rows == manifest["curvature"]["rows"] == 8  # the other spec's row is left out
    assert set(copied["suite_hash"].to_pylist()) == {manifest["suites"][0]["spec_hash"]}
    plot = "plots/smoke-curvature-lr.png"
    assert plot in manifest["plots"] and plot in manifest["files"]
    import matplotlib.image

    image = matplotlib.image.imread(target / plot)
    assert image.shape[0] > 100 and image.std() > 0

    readme = (target / "README.md").read_text()
    assert f"![smoke-curvature-lr]({plot})" in readme
    table = _task_table(readme, "addition")
    assert set(table) == set(CHOSEN)
    for method, (lam, predicted, chosen, edge) in table.items():
        assert lam == f"{LAMBDA[method]:.4g} (" + ("yes" if method != "milora" else "no: 0/1 seeds") + ")"
        assert math.isclose(float(predicted), CHOSEN["lora"] * LAMBDA["lora"] / LAMBDA[method], rel_tol=1e-2)
        assert float(chosen) == CHOSEN[method]
        side = {0.001: "lowest", 0.1: "highest"}.get(CHOSEN[method], "no")
        assert edge == f"{side} (3 rates 0.001-0.1)"
    # the fit, computed here by hand: log(chosen) on log(1 / lambda)
    x = np.log([1 / LAMBDA[m] for m in CHOSEN])
    y = np.log(list(CHOSEN.values()))
    slope = np.polyfit(x, y, 1)[0]
    r2 = np.corrcoef(x, y)[0, 1] ** 2
    fit_line = readme.split("Curvature at init, task `addition`")[1].split("fit of log")[1].splitlines()[0]
    assert f"slope {slope:.3f}, R^2 {r2:.3f}" in fit_line and "n = 4" in fit_line
    # edges per grid kind, from the selection files: 8 selections, 4 lowest (pissa, olora), 2 highest (milora)
    assert manifest["curvature"]["edges"] == [
        {"suite": "smoke", "kind": "fixed", "selections": 8, "lowest": 4, "highest": 2, "not_from_grid": 0}
    ]
    assert re.search(r"\| smoke +\| fixed +\| 8 +\| 4 +\| 2 +\| 6/8 \(75%\)", readme)


def test_the_curvature_rows_load_as_a_dataset_config(version, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    target, _ = version
    assert datasets.get_dataset_config_names(str(target)) == ["results", "curves", "curvature"]
    loaded = datasets.load_dataset(str(target), "curvature", split="train", cache_dir=str(tmp_path / "hf"))
    assert sorted(loaded["method"]) == sorted(pq.read_table(target / CURVATURE_FILE)["method"].to_pylist())


def test_an_edited_curvature_file_is_detected(version, capsys):
    target, _ = version
    verify_version(target)
    edited = target / CURVATURE_FILE
    table = pq.read_table(edited)
    rows = table.to_pylist()
    rows[0]["lambda_max"] *= 2
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), edited)
    with pytest.raises(PublishError, match=re.escape(str(edited)) + ".*the file was edited"):
        verify_version(target)
    assert main(["leaderboard", str(target)]) == 2
    assert str(edited) in capsys.readouterr().err


def test_the_version_and_the_folder_show_the_curvature_and_the_edges(version, capsys):
    target, _ = version
    assert main(["leaderboard", str(target)]) == 0
    shown = capsys.readouterr().out
    folder = render(target.parent.parent / "runs")
    for text in (shown, folder):
        assert "Curvature at init, task `addition`" in text and "Curvature at init, task `compare_sums`" in text
        assert "on the edge of its tuning grid" in text and "R^2" in text


def test_publish_without_curvature_is_unchanged(tmp_path):
    target = publish(_tree(tmp_path / "runs", curvature=False), "v1", root=tmp_path / "board")
    names = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    assert CURVATURE_FILE not in names and not any("curvature" in n for n in names)
    manifest = json.loads((target / "manifest.json").read_text())
    assert "curvature" not in manifest and not any("curvature" in p for p in manifest["plots"])
    readme = (target / "README.md").read_text()
    assert "Curvature" not in readme and "edge of its tuning grid" not in readme
    # curvature of another spec only: still nothing of it in the version
    write_curvature(tmp_path / "runs", "lora", "addition", 0, 5.0, suite_hash="0" * 16)
    again = publish(tmp_path / "runs", "v2", root=tmp_path / "board")
    assert (again / "README.md").read_text().replace("v2", "v1").split("Published")[1].split("\n", 1)[
        1
    ] == readme.split("Published")[1].split("\n", 1)[1]
    assert not (again / CURVATURE_FILE).exists()


def test_log_axes_label_ticks_as_plain_numbers():
    """With mathtext off (names are plain text), log axes would print '$\\mathdefault{10^{-3}}$'."""
    import matplotlib

    from initbench.board.plots import _log_axes, _pyplot

    plt = _pyplot()
    with matplotlib.rc_context({"text.parse_math": False}):
        fig, ax = plt.subplots()
        ax.plot([0.001, 0.1], [1e-4, 1e-2])
        _log_axes(ax, "x", "y")
        fig.canvas.draw()
        labels = [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text()]
        plt.close(fig)
    assert "0.001" in labels and "0.01" in labels and not any("$" in label for label in labels)
