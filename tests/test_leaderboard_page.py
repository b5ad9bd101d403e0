"""Issue 16: a published version reads like a leaderboard (the ranking first, plots only with data,
sortable in a browser) and loads as a Hugging Face dataset; synthetic `smoke` rows, no training."""

from __future__ import annotations

import json
import shutil
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from _trees import METRIC, fixed_tree, tuned_tree

from initbench.board import leaderboard
from initbench.board.leaderboard_page import first_url, paper_url
from initbench.board.plots import PLOT_KINDS, pareto_front, write_plots
from initbench.board.publish import read_version, verify_version
from initbench.board.ranking import ranking
from initbench.method.registry import get_method
from initbench.selection.counted import read_results
from initbench.store.results import CURVE_SUFFIX

MEANS = {"lora": 0.55, "pissa": 0.62, "milora": 0.58, "full-ft": 0.70}
CHOSEN = {"lora": 0.01, "pissa": 0.001, "milora": 0.1, "full-ft": 0.001}
COLUMNS = {
    "base": dict(trainable_params=0, init_seconds=0.0),
    "lora": dict(trainable_params=4608, init_seconds=0.01, forgetting_kl=0.012),
    "pissa": dict(trainable_params=4608, init_seconds=0.21, forgetting_kl=0.02),
    "milora": dict(trainable_params=4608, init_seconds=0.24, forgetting_kl=0.009, calibration_examples=8),
    "full-ft": dict(trainable_params=135_000, init_seconds=0.0, forgetting_kl=0.08, is_reference=True),
}


def _final(method: str, task: str, seed: int) -> float:
    """A method's score: its mean, a task offset and a deterministic jitter per seed."""
    return (
        MEANS[method]
        + (0.05 if task == "compare_sums" else 0.0)
        + 0.03 * (zlib.crc32(f"{method}/{task}/{seed}".encode()) % 1000 / 1000 - 0.5)
    )


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    """A published tuned board; ``base`` scores 0.1 on all three seeds, a constant cell whose pyarrow
    mean (0.10000000000000002) lies above its (0.1, 0.1) interval: the scores plot used to fail on it."""
    from initbench.board.publish import publish

    tmp = tmp_path_factory.mktemp("page")
    columns = {m: {**c, "forgetting_set": "held-test"} for m, c in COLUMNS.items()}
    runs = tuned_tree(
        tmp / "runs",
        {(m, t): lr for m, lr in CHOSEN.items() for t in METRIC},
        seeds=(0, 1, 2),
        final=_final,
        columns=columns,
    )
    return publish(runs, "v1", root=tmp / "board"), runs


class _Page(HTMLParser):
    """The parts of a page the tests look at: tables (id, classes, header keys, rows of cells with their
    data-v, text and link), sections in order, images and external references."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[dict] = []
        self.sections: list[str] = []
        self.images: list[str] = []
        self.figures = 0
        self.scripts: list[dict] = []
        self._cell: dict | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id", ""))
        elif tag == "table":
            self.tables.append(
                {
                    "id": a.get("id"),
                    "class": (a.get("class") or "").split(),
                    "keys": [],
                    "rows": [],
                    "section": self.sections[-1] if self.sections else None,
                    "sort": {},
                }
            )
        elif tag == "th" and self.tables:
            self.tables[-1]["keys"].append(a.get("data-key"))
            self.tables[-1]["sort"][a.get("data-key")] = a.get("aria-sort")
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag == "td" and self.tables:
            self._cell = {"v": a.get("data-v"), "text": "", "href": None, "class": a.get("class") or ""}
            self.tables[-1]["rows"][-1].append(self._cell)
        elif tag == "a" and self._cell is not None:
            self._cell["href"] = a.get("href")
        elif tag == "img":
            self.images.append(a.get("src"))
        elif tag == "figure":
            self.figures += 1
        elif tag in ("script", "link", "iframe"):
            self.scripts.append({"tag": tag, **a})

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None and not self._cell["text"]:
            self._cell["text"] = data.strip()

    def body_rows(self, table: dict) -> list[list[dict]]:
        return [r for r in table["rows"] if r]  # the header row has no td


def test_the_ranking_is_one_row_per_method_from_the_board(version):
    target, runs = version
    table, curves = read_version(target)
    entry = leaderboard.build(table, curves).suites[0]
    block = entry.protocols["tuned"]
    rows = ranking(entry)
    assert [r["method"] for r in rows] == [r.method for r in block.aggregate]  # best IQM first
    assert sorted(r["method"] for r in rows) == sorted(set(table["method"].to_pylist()))
    assert [r["rank"] for r in rows if not r["is_reference"]] == [1, 2, 3]
    assert all(r["rank"] is None for r in rows if r["method"] in ("base", "full-ft"))
    aggregate = {r.method: r for r in block.aggregate}
    pairwise = {r.method: r for r in block.pairwise}
    for r in rows:
        agg = aggregate[r["method"]]
        assert (r["iqm"], r["iqm_low"], r["iqm_high"]) == (agg.iqm, agg.iqm_low, agg.iqm_high)
        assert r["versus"] == pairwise.get(r["method"])
        for task, metric in block.primary.items():
            values = [
                x["value"]
                for x in table.to_pylist()
                if x["method"] == r["method"]
                and x["task"] == task
                and x["metric"] == metric
                and x["phase"] == "final"
                and (x["protocol"] == "tuned" or r["method"] == "base")
            ]
            assert r["scores"][task]["mean"] == pytest.approx(np.mean(values))
    by = {r["method"]: r for r in rows}
    assert by["pissa"]["learning_rates"] == {t: [CHOSEN["pissa"]] for t in METRIC}
    assert by["base"]["learning_rates"] == {}
    assert by["milora"]["trainable_params"] == 4608 and by["milora"]["calibration_examples"] == 8
    assert by["lora"]["forgetting_kl"] == pytest.approx(0.012) and by["base"]["forgetting_kl"] is None
    assert by["lora"]["versus"] is None and by["pissa"]["versus"].poi == 1.0  # pissa beats lora on every pair
    readme = (target / "README.md").read_text()
    ranking_text = readme.split("## Ranking")[1].split("## Suite")[0]
    lines = [line for line in ranking_text.splitlines() if line.startswith("| ") and "method" not in line]
    assert [line.split("|")[2].strip() for line in lines] == [r["method"] for r in rows]


def test_the_page_leads_with_the_ranking_and_shows_only_plots_with_data(version):
    target, _ = version
    manifest = json.loads((target / "manifest.json").read_text())
    page = _Page((target / "index.html").read_text())
    assert page.sections[0] == "ranking" and page.sections.index("plots") < page.sections.index("cells")
    first = page.tables[0]
    assert first["id"] == "ranking-1" and "ranking" in first["class"] and "sortable" in first["class"]
    rows = page.body_rows(first)
    methods = [r[1]["text"] for r in rows]
    assert methods == [r["method"] for r in ranking(leaderboard.build(*read_version(target)).suites[0])]
    assert len(set(methods)) == len(methods) == 5
    assert first["keys"][:3] == ["rank", "method", "iqm"]
    assert {"task-0", "task-1", "versus", "lr", "params", "init", "forgetting", "paper", "code"} <= set(first["keys"])
    cells = {m: dict(zip(first["keys"], r)) for m, r in zip(methods, rows)}
    pissa = get_method("pissa")
    assert cells["pissa"]["paper"]["href"] == paper_url(pissa.paper) == "https://arxiv.org/abs/2404.02948"
    assert cells["pissa"]["code"]["href"] == first_url(pissa.code) and first_url(pissa.code).startswith(
        "https://github.com/GraphPKU/PiSSA"
    )
    assert cells["base"]["paper"]["href"] is None  # "—": no link made up
    assert cells["milora"]["lr"]["text"] == "0.1" and float(cells["pissa"]["params"]["v"]) == 4608
    assert page.tables[-1]["id"] != "ranking-1" and any(t["id"] == "all-cells" for t in page.tables)
    # plots: exactly the files written, each shown once; none without data (every lora-family method
    # has the same trainable parameters: no parameter trade-off to draw)
    shown = sorted(page.images)
    assert shown == sorted(manifest["plots"]) and len(shown) == page.figures
    assert all((target / src).is_file() for src in shown)
    assert "plots/smoke-pareto-params.png" not in shown
    assert {
        "plots/smoke-aggregate.png",
        "plots/smoke-pareto-init.png",
        "plots/smoke-pareto-forgetting.png",
        "plots/smoke-lr-sensitivity.png",
        "plots/smoke-loss-curves.png",
    } <= set(shown)
    # offline: no external script, stylesheet or frame; links out are plain anchors
    assert [s for s in page.scripts if s["tag"] != "script" or s.get("src")] == []
    assert all(not src.startswith(("http:", "https:", "//")) for src in shown)


def test_plots_are_written_only_where_they_have_data(tmp_path):
    pytest.importorskip("matplotlib")
    runs = fixed_tree(tmp_path / "runs")  # fixed protocol, no tuning trials, no cost or forgetting recorded
    board = leaderboard.build(read_results(runs), read_results(runs, CURVE_SUFFIX))
    names = {p.name for p in write_plots(board, read_results(runs, CURVE_SUFFIX), tmp_path / "plots")}
    assert names == {"smoke-aggregate.png", "smoke-scores.png", "smoke-loss-curves.png"}
    assert {p.name for p in (tmp_path / "plots").iterdir()} == names
    assert {n.removeprefix("smoke-").removesuffix(".png") for n in names} <= set(PLOT_KINDS)
    assert {p.name for p in write_plots(board, None, tmp_path / "no-curves")} == {
        "smoke-aggregate.png",
        "smoke-scores.png",
    }


def test_the_pareto_front_is_the_set_no_point_dominates():
    rng = np.random.default_rng(0)
    for _ in range(50):
        points = [(float(x), float(y)) for x, y in rng.integers(0, 6, size=(int(rng.integers(1, 9)), 2))]
        dominated = {p for p in points if any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in points)}
        expected = sorted(set(points) - dominated)
        assert pareto_front(points) == expected


def _dump_dom(chromium: str, url: str, profile: Path) -> str:
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--dump-dom",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=90,
    )
    return done.stdout


def test_the_ranking_sorts_in_headless_chromium(version, tmp_path):
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the page's script was not run")
    target, _ = version
    url = (target / "index.html").resolve().as_uri()
    dom = _dump_dom(chromium, url + "#ranking-1=iqm:asc&all-cells=mean:desc", tmp_path / "profile")
    assert 'data-count="ranking-1">5 of 5 rows<' in dom  # the script ran to its end (it fills the counts)
    page = _Page(dom)
    ranking_table = next(t for t in page.tables if t["id"] == "ranking-1")
    iqm = [float(r[2]["v"]) for r in page.body_rows(ranking_table)]
    assert iqm == sorted(iqm) and len(iqm) == 5
    assert ranking_table["sort"]["iqm"] == "ascending" and ranking_table["sort"]["method"] == "none"
    cells = next(t for t in page.tables if t["id"] == "all-cells")
    means = [float(r[cells["keys"].index("mean")]["v"]) for r in page.body_rows(cells)]
    assert means == sorted(means, reverse=True)
    page = _Page(_dump_dom(chromium, url + "#ranking-1=method:desc", tmp_path / "profile"))
    names = [r[1]["text"] for r in page.body_rows(next(t for t in page.tables if t["id"] == "ranking-1"))]
    assert names == sorted(names, reverse=True)


def test_a_version_loads_as_a_hugging_face_dataset(version, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    target, _ = version
    manifest = json.loads((target / "manifest.json").read_text())
    readme = (target / "README.md").read_text()
    assert readme.startswith("---\n") and "\n# initbench leaderboard v1\n" in readme  # the card, then the text
    assert datasets.get_dataset_config_names(str(target)) == ["results", "curves"]
    results = datasets.load_dataset(str(target), cache_dir=str(tmp_path / "hf"))
    assert list(results) == ["train"] and results["train"].num_rows == manifest["results"]["rows"]
    table, curves = read_version(target)
    assert sorted(results["train"]["run_id"]) == sorted(table["run_id"].to_pylist())
    loaded = datasets.load_dataset(str(target), "curves", cache_dir=str(tmp_path / "hf"))
    assert loaded["train"].num_rows == manifest["curves"]["rows"] == curves.num_rows
    verify_version(target)  # loading wrote nothing into the version
