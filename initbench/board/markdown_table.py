"""Tables exactly as tabulate renders them, faster for the leaderboard's large tables of plain text.

``table(lines, headers, tablefmt, **options)`` is ``tabulate.tabulate(lines, headers, tablefmt=tablefmt,
**options)``, the same text.  Two shortcuts, each taken only where it cannot change the text:

* when every character of the table is printable ASCII or one of the tables' own one-column symbols
  (``±``), a cell's width is its length: tabulate is told so (``WIDE_CHARS_MODE`` off for the call)
  instead of measuring every cell with wcwidth;
* in the ``github`` format, a column whose number parsing is disabled and whose cells are all text
  (or None) is laid out here: tabulate formats such a column as the text itself (None: blank),
  strips it, pads it to the left-aligned width ``max(len(header) + 2, longest cell)`` and pads each
  cell with one space either side.  Its other columns (numbers, whose type, format and decimal
  alignment tabulate decides) are still rendered by tabulate, as a table of their own, and read
  back by the widths of its header separator: in a table without wide characters, ANSI codes or
  line breaks, tabulate lays out each column on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import tabulate as tabulate_module

_NARROW_SYMBOLS = ("±",)  # the tables' own characters beyond ASCII, one column wide each
_PADDING = 1  # the github format's padding either side of a cell
_MIN_PADDING = 2  # tabulate's MIN_PADDING: a column is at least its header plus this wide


def _narrow(text: str) -> bool:
    """Whether every character of ``text`` is printable ASCII or a narrow symbol: one column wide,
    no ANSI escape (ESC is not printable), no line break."""
    for symbol in _NARROW_SYMBOLS:
        text = text.replace(symbol, "")
    return text.isascii() and text.isprintable()


def table(lines: Sequence[Sequence[Any]], headers: Sequence[Any], tablefmt: str = "github", **options: Any) -> str:
    """``tabulate.tabulate(lines, headers, tablefmt=tablefmt, **options)``: the same text, faster for a
    large table of plain text (see the module docstring)."""
    if tablefmt == "github" and set(options) <= {"disable_numparse"}:
        text = _github(lines, headers, options.get("disable_numparse", False))
        if text is not None:
            return text
    return _tabulate(lines, headers, tablefmt, **options)


def _tabulate(lines: Sequence[Sequence[Any]], headers: Sequence[Any], tablefmt: str, **options: Any) -> str:
    """tabulate itself, without wcwidth when every character is one column wide."""
    text = "".join(map(_text, headers)) + "".join(_text(cell) for line in lines for cell in line)
    if not _narrow(text):
        return tabulate_module.tabulate(lines, headers, tablefmt=tablefmt, **options)
    return _without_wcwidth(lines, headers, tablefmt, **options)


def _text(cell: Any) -> str:
    """A cell's text as tabulate measures it (bytes: decoded, as tabulate does)."""
    return cell.decode("utf-8", "replace") if isinstance(cell, bytes) else str(cell)


def _without_wcwidth(lines: Sequence[Sequence[Any]], headers: Sequence[Any], tablefmt: str, **options: Any) -> str:
    """tabulate with ``WIDE_CHARS_MODE`` off for the call (put back after): for narrow text only."""
    wide = tabulate_module.WIDE_CHARS_MODE
    tabulate_module.WIDE_CHARS_MODE = False
    try:
        return tabulate_module.tabulate(lines, headers, tablefmt=tablefmt, **options)
    finally:
        tabulate_module.WIDE_CHARS_MODE = wide


_PLAIN_TYPES = (str, int, float, bool, type(None))  # cells whose text tabulate takes from str()


def _github(
    lines: Sequence[Sequence[Any]], headers: Sequence[Any], disable_numparse: bool | Iterable[int]
) -> str | None:
    """The github table with its text columns laid out here; None where that is not certain to be
    tabulate's text (no rows, ragged rows, no text column, a header that is not text, a cell of
    another type, a character that is not narrow)."""
    width = len(headers)
    if not lines or not width or any(type(h) is not str for h in headers) or any(len(r) != width for r in lines):
        return None
    if isinstance(disable_numparse, bool):
        unparsed = set(range(width)) if disable_numparse else set()
    else:
        unparsed = {int(i) for i in disable_numparse}
        if not unparsed <= set(range(width)):
            return None  # a negative or out-of-range index: left to tabulate
    columns = list(zip(*lines))
    is_text = [j in unparsed and all(type(v) is str or v is None for v in columns[j]) for j in range(width)]
    if not any(is_text):
        return None
    others = [j for j in range(width) if not is_text[j]]
    if any(type(v) not in _PLAIN_TYPES for j in others for v in columns[j]):
        return None
    text = "".join(headers) + "".join(
        "".join(filter(None, columns[j]))  # its text, None and blanks left out
        if is_text[j]
        else "".join(v if type(v) is str else str(v) for v in columns[j] if v is not None)
        for j in range(width)
    )
    if not _narrow(text):
        return None
    rendered: list[list[str]] = [[] for _ in range(width)]  # each cell padded to its column's width
    header_cells = [""] * width
    for j in (j for j in range(width) if is_text[j]):
        cells = ["" if v is None else v.strip() for v in columns[j]]
        w = max(len(headers[j]) + _MIN_PADDING, max(map(len, cells)))
        rendered[j] = [c.ljust(w) for c in cells]
        header_cells[j] = headers[j].ljust(w)
    if others:
        sub = _other_columns(lines, headers, others, unparsed)
        if sub is None:
            return None
        for j, (header, cells) in zip(others, sub):
            header_cells[j], rendered[j] = header, cells
    pad = " " * _PADDING
    begin, separator, end = "|" + pad, pad + "|" + pad, pad + "|"
    rule = "|" + "|".join("-" * (len(h) + 2 * _PADDING) for h in header_cells) + "|"
    body = (begin + separator.join(row) + end for row in zip(*rendered))
    return "\n".join([begin + separator.join(header_cells) + end, rule, *body])


def _other_columns(
    lines: Sequence[Sequence[Any]], headers: Sequence[str], others: list[int], unparsed: set[int]
) -> list[tuple[str, list[str]]] | None:
    """Columns ``others`` (narrow text) as tabulate lays them out in a github table of their own: per
    column, its header and cells padded to the column's width (without the padding either side), read
    back by the widths of the header separator."""
    sub_lines = [[row[j] for j in others] for row in lines]
    numparse_off = [k for k, j in enumerate(others) if j in unparsed]
    text = _without_wcwidth(sub_lines, [headers[j] for j in others], "github", disable_numparse=numparse_off)
    rows = text.split("\n")
    widths = [len(segment) for segment in rows[1][1:-1].split("|")] if len(rows) > 1 else []
    if len(rows) != len(lines) + 2 or len(widths) != len(others):
        return None
    out: list[tuple[str, list[str]]] = []
    start = 1
    for w in widths:
        a, b = start + _PADDING, start + w - _PADDING
        out.append((rows[0][a:b], [row[a:b] for row in rows[2:]]))
        start += w + 1
    return out
