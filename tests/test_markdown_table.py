"""``initbench.board.markdown_table.table`` is ``tabulate.tabulate``, character for character.

The leaderboard's tables are laid out by ``markdown_table`` (github format: its text columns by
hand, the rest by tabulate); whatever the cells, the text must be tabulate's own.
"""

from __future__ import annotations

import random

import pytest
import tabulate as tabulate_module

from initbench.board import markdown_table
from initbench.board.markdown_table import table

# cells a leaderboard table can hold, and some it cannot, each kind tabulate treats its own way
TEXT = [
    "0.5000 ± 0.0100 [0.4900, 0.5100] (n=3)",
    "-0.1234 ± 0.0500 [-0.2000, -0.0100] (n=10)",
    "0.3000 (n=1)",
    "nan ± nan (n=2)",
    "",
    None,
    "lora",
    "base (reference)",
    " padded ",
    "a | pipe",
    "True",
    "False",
    "**0.6000**",
    "1.0",
    "-2",
    "1,000",
    "1e-3",
    "nan",
    "inf",
    "0.5 ± 0.1",
]
NUMBERS = [
    "0.5000",
    "-0.25",
    "1",
    "12",
    "1,234",
    "1e5",
    "nan",
    "-inf",
    "",
    None,
    3,
    -7,
    0.125,
    -1e-9,
    float("nan"),
    True,
]
ODD = ["方法", "\x1b[31mred\x1b[0m", "two\nlines", "tab\there", "é", b"bytes", "方法".encode()]


def _check(lines, headers, **options):
    for fmt in ("github", "simple", "html"):
        try:
            expected = tabulate_module.tabulate(lines, headers, tablefmt=fmt, **options)
        except Exception as err:  # tabulate's own error (an index past the last column): the same one
            with pytest.raises(type(err)):
                table(lines, headers, tablefmt=fmt, **options)
            continue
        assert table(lines, headers, tablefmt=fmt, **options) == expected, (fmt, lines, headers, options)
    assert tabulate_module.WIDE_CHARS_MODE is (tabulate_module.wcwidth is not None)  # put back as it was


def _random_table(rng: random.Random, odd: bool) -> tuple[list[list], list[str], dict]:
    columns = rng.randint(1, 6)
    rows = rng.randint(1, 5)
    kinds = [rng.choice(["text", "numbers", "mixed"]) for _ in range(columns)]
    pools = {"text": TEXT, "numbers": NUMBERS, "mixed": TEXT + NUMBERS + (ODD if odd else [])}
    lines = [[rng.choice(pools[k]) for k in kinds] for _ in range(rows)]
    headers = [rng.choice(["method", "task (acc, primary)", "IQM", "x", " h ", "mean over tasks"]) for _ in kinds]
    choice = rng.choice(["none", "text", "all", "some"])
    options = (
        {}
        if choice == "none"
        else {"disable_numparse": True}
        if choice == "all"
        else {"disable_numparse": [j for j, k in enumerate(kinds) if k == "text" or (choice == "some" and j % 2)]}
    )
    return lines, headers, options


@pytest.mark.parametrize("odd", [False, True])
def test_random_tables_are_tabulates(odd):
    rng = random.Random(15 + odd)
    laid_out_here = 0
    for _ in range(400):
        lines, headers, options = _random_table(rng, odd)
        _check(lines, headers, **options)
        laid_out_here += markdown_table._github(lines, headers, options.get("disable_numparse", False)) is not None
    assert laid_out_here > 100  # the fast path was taken, not only tabulate


@pytest.mark.parametrize(
    "lines, headers, options",
    [
        # the leaderboard's per-task table: method, text cells with numbers unparsed, a number column
        (
            [["lora", "0.5000 ± 0.0100 [0.4900, 0.5100] (n=3)", "0.5"], ["pissa", "", "1.0000"]],
            ["method", "t1 (acc)", "mean over tasks"],
            {"disable_numparse": [1]},
        ),
        ([["lora", "0.5000 ± 0.0100 (n=3)", "0.5"]], ["method", "t1", "m"], {}),  # no text column: tabulate
        ([["a", None], ["b", None]], ["method", "all blank"], {"disable_numparse": [1]}),  # a blank column
        ([["a", "x"]], ["h1", "h2"], {"disable_numparse": True}),  # every column text
        ([["方法", "0.5000 ± 0.0100 (n=3)", "0.5"]], ["method", "t1", "m"], {"disable_numparse": [1]}),  # wide
        ([["a", "x\ny"]], ["h1", "h2"], {"disable_numparse": [1]}),  # two lines in a cell
        ([["a", "b"]], ["h1", "h2"], {"disable_numparse": [-1]}),  # a negative index
        ([], ["h1", "h2"], {"disable_numparse": [1]}),  # no rows (tabulate fails)
        ([], ["h1", "h2"], {}),  # no rows
        ([["a", "b", "c"], ["d", "e"]], ["h1", "h2", "h3"], {"disable_numparse": [1]}),  # ragged
        ([["a", "b"]], ["h1", "h2", "h3"], {"disable_numparse": [1]}),  # more headers than cells
    ],
)
def test_edge_tables_are_tabulates(lines, headers, options):
    _check(lines, headers, **options)


def test_a_large_text_table_is_laid_out_here(monkeypatch):
    """The per-task table of a large board takes the fast path (tabulate sees only its number
    column), and is still tabulate's text."""
    rng = random.Random(3)
    lines = [
        [f"method-{i:03d}"]
        + [
            f"{rng.uniform(-1, 1):.4f} ± {rng.uniform(0, 1):.4f} [{rng.uniform(-1, 0):.4f}, 0.9000] (n=10)"
            for _ in range(40)
        ]
        + [f"{rng.uniform(0, 1):.4f}"]
        for i in range(30)
    ]
    headers = ["method"] + [f"task-{j:02d} (metric)" for j in range(40)] + ["mean over tasks (primary metrics)"]
    seen = []
    real = tabulate_module.tabulate
    monkeypatch.setattr(
        tabulate_module, "tabulate", lambda rows, heads, **kw: seen.append(heads) or real(rows, heads, **kw)
    )
    text = table(lines, headers, "github", disable_numparse=list(range(1, 41)))
    assert seen == [["method", "mean over tasks (primary metrics)"]]
    assert text == real(lines, headers, tablefmt="github", disable_numparse=list(range(1, 41)))
    assert markdown_table._github(lines, headers, list(range(1, 41))) == text
