"""Issue 18, findings 4 and 9: published versions are tamper-evident, racing publishes and hostile
names fail cleanly; synthetic `smoke` rows, no training."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from _trees import fixed_tree, smoke_row, write_smoke_run

import initbench.board.publish as publish_module
from initbench.board.compare import compare
from initbench.board.publish import PublishError, publish
from initbench.board.reproduce import reproduce
from initbench.cli import main


@pytest.fixture
def version(tmp_path):
    root = tmp_path / "board"
    return publish(fixed_tree(tmp_path / "runs"), "v1", root=root), root


def _edit_value(path):
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[0]["value"] = 0.99
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), path)


@pytest.mark.parametrize("edit", ["results value", "curves", "manifest", "plot", "missing readme", "added parquet"])
def test_an_edited_version_fails_every_read_naming_the_file(version, capsys, edit):
    target, root = version
    assert compare("v1", "v1", root=root)  # untouched: reads fine
    assert main(["leaderboard", str(target)]) == 0
    capsys.readouterr()
    if edit == "results value":
        edited = target / "results.parquet"
        _edit_value(edited)
    elif edit == "curves":
        edited = target / "curves.parquet"
        table = pq.read_table(edited)
        pq.write_table(table.slice(1), edited)
    elif edit == "manifest":  # made consistent with an edited results file: the recorded hash still differs
        edited = target / "manifest.json"
        _edit_value(target / "results.parquet")
        manifest = json.loads(edited.read_text())
        manifest["files"]["results.parquet"] = publish_module.file_sha256(target / "results.parquet")
        edited.write_text(json.dumps(manifest))
    elif edit == "plot":
        edited = next((target / "plots").glob("*.png"))
        edited.write_bytes(edited.read_bytes() + b"\0")
    elif edit == "missing readme":
        edited = target / "README.md"
        edited.unlink()
    else:  # rows slipped in beside the published ones
        edited = target / "plots" / "more.results.parquet"
        edited.write_bytes((target / "results.parquet").read_bytes())
    for read in (lambda: reproduce(target, runs=1), lambda: compare("v1", "v1", root=root)):
        with pytest.raises(PublishError, match=re.escape(str(edited))):
            read()
    for argv in (
        ["leaderboard", str(target)],
        ["leaderboard", str(target / "results.parquet")],
        ["reproduce", str(target)],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(edited) in err[0], (argv, err)


def test_two_publishes_of_one_version_racing(tmp_path, monkeypatch):
    root = tmp_path / "board"
    mine = fixed_tree(tmp_path / "mine")
    theirs = fixed_tree(tmp_path / "theirs", seeds=(0, 1, 2))
    real = publish_module._index_html
    rival: dict = {}

    def index_html_while_another_publishes(manifest, board):
        if rival:  # the other publish finishes while this one is still writing
            results, version = rival.pop("results"), rival.pop("version")
            publish(results, version, root=root)
        return real(manifest, board)

    monkeypatch.setattr(publish_module, "_index_html", index_html_while_another_publishes)
    rival.update(results=theirs, version="v1")
    with pytest.raises(PublishError, match="published by another process meanwhile, with other contents"):
        publish(mine, "v1", root=root)
    assert publish_module._published_digest(root / "v1") is not None
    rival.update(results=mine, version="v2")  # the same contents: the loser finds its version published
    assert publish(mine, "v2", root=root) == root / "v2"
    assert not [p for p in root.iterdir() if p.name.startswith((".v1.", ".v2."))]  # no staging left behind
    assert set(json.loads((root / publish_module.MANIFESTS_FILE).read_text())) == {"v1", "v2"}


def test_hostile_names_publish_and_render(tmp_path):
    out = fixed_tree(tmp_path / "runs")
    task = "sum<!--x&<b>"
    for method, value in (("base", 0.1), ("lo$ra", 0.4), ("a$^$c", 0.5)):
        for seed in (0, 1):
            row = smoke_row("lora", "addition", seed, value + 0.01 * seed)
            write_smoke_run(
                out,
                {
                    **row,
                    "method": method,
                    "task": task,
                    "run_id": f"{row['run_id']}/{method}{task}",
                    "is_reference": method == "base",
                },
            )
    target = publish(out, "v1", root=tmp_path / "board", incomplete=True)  # method names no sweep planned
    assert (target / "plots" / "smoke-scores.png").stat().st_size > 0
    page = (target / "index.html").read_text()
    assert "<!--x" not in page and "<b>" not in page and page.count("</script>") == 1  # escaped, never markup
    cells = _cell_texts(page)
    assert {task, "lo$ra", "a$^$c"} <= cells


def _cell_texts(page: str) -> set[str]:
    """The text of every table cell of a page (entities decoded)."""
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.texts, self.inside = set(), False

        def handle_starttag(self, tag, attrs):
            self.inside = self.inside or tag == "td"

        def handle_endtag(self, tag):
            self.inside = self.inside and tag != "td"

        def handle_data(self, data):
            if self.inside and data.strip():
                self.texts.add(data.strip())

    parser = Cells()
    parser.feed(page)
    return parser.texts


def test_reproduce_fails_loudly_on_a_row_that_no_rerun_gives(tmp_path, capsys):
    """A version published from rows a run does not give (hashes consistent: published that way)
    reproduces as differing values and budget columns, exit 1."""
    out = tmp_path / "runs"
    assert main(["evaluate", "--suite", "smoke", "--method", "lora", "--seeds", "0", "--out", str(out)]) == 0
    for path in out.rglob("*.results.parquet"):  # both tasks' runs: whichever is drawn differs
        table = pq.read_table(path)
        rows = table.to_pylist()
        rows[0].update(value=0.875, train_tokens=rows[0]["train_tokens"] + 1)
        pq.write_table(type(table).from_pylist(rows, schema=table.schema), path)
    target = publish(out, "v1", root=tmp_path / "board")
    capsys.readouterr()
    assert main(["reproduce", str(target)]) == 1
    report = capsys.readouterr().out
    assert "SOME VALUES DIFFER" in report and re.search(r"\| train_tokens +\|", report) and "differs by" in report
