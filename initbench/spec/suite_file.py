"""Reading a suite file safely: a size cap, UTF-8, and YAML whose expansion is bounded.

A suite is a short hand-written file, so the reader refuses what no suite needs and what
could stall or mislead a run before any check sees it:

- more than ``MAX_BYTES`` (1 MiB) on disk, more than ``MAX_NODES`` YAML nodes as written, or
  nesting deeper than ``MAX_DEPTH`` levels (data belongs in data files, not in the suite);
- bytes that are not UTF-8 (the error names the offset);
- a YAML alias bomb: anchors and aliases are allowed, but the document expanded (every alias
  counted as a copy of what it names) may hold at most ``MAX_NODES`` nodes, and an alias
  may not refer to a node that contains it.  The check walks the composed node graph with
  memoized sizes, so it costs the size of the file, never the size of the expansion;
- a key given twice in one mapping (YAML's "last one wins" would silently drop the first):
  the error names the key and both lines.

Every error is a ``SuiteError`` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from initbench.spec.suite_base import SuiteError

MAX_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_DEPTH = 64

try:  # the C parser when PyYAML has it; the checks below work on its nodes either way
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader


def read_suite_yaml(path: Path) -> Any:
    """The YAML document of the suite file ``path``, checked as the module docstring says."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SuiteError(
                f"{path}: suite file is {size:,} bytes, more than the {MAX_BYTES:,}-byte (1 MiB) "
                "limit; a suite names its data (generator, files or splits), it does not hold it"
            )
        raw = path.read_bytes()
    except OSError as err:
        raise SuiteError(f"{path}: cannot read the suite file: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SuiteError(
            f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); save the suite as UTF-8"
        ) from None
    try:
        _check_events(text, path)
    except yaml.YAMLError as err:
        raise SuiteError(f"{path}: not valid YAML: {err}") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, path)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise SuiteError(f"{path}: not valid YAML: {err}") from None
    finally:
        loader.dispose()


def _check_events(text: str, path: Path) -> None:
    """Before any node is built: at most ``MAX_NODES`` events and ``MAX_DEPTH`` levels of nesting
    (the composer recurses per level: libyaml's would overflow the C stack on deep input)."""
    depth = 0
    for count, event in enumerate(yaml.parse(text, Loader=_Loader), start=1):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise SuiteError(
                    f"{path}: line {event.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels; "
                    "a suite is a shallow mapping"
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        if count > MAX_NODES:
            raise SuiteError(
                f"{path}: more than {MAX_NODES:,} YAML nodes (line {event.start_mark.line + 1}); a suite "
                "names its data (generator, files or splits), it does not hold it"
            )


def _check_nodes(root: yaml.Node, path: Path) -> None:
    """Reject duplicate keys and an expansion beyond ``MAX_NODES`` (or a recursive alias).

    Iterative post-order walk of the node graph (aliases are shared nodes), each node's
    expanded size computed once, so a chain of thousands of anchors cannot exhaust the stack."""
    sizes: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[yaml.Node] = [root]
    while stack:
        node = stack[-1]
        ident = id(node)
        if ident in sizes:
            stack.pop()
            continue
        children = _children(node)
        if ident not in entered:
            entered.add(ident)
            if isinstance(node, yaml.MappingNode):
                _check_duplicate_keys(node, path)
            for child in children:
                if id(child) in entered and id(child) not in sizes:
                    raise SuiteError(
                        f"{path}: line {child.start_mark.line + 1}: an alias refers to a node that "
                        "contains it (a recursive structure); a suite is a plain tree"
                    )
                if id(child) not in sizes:
                    stack.append(child)
            continue
        stack.pop()
        total = 1 + sum(sizes[id(child)] for child in children)
        if total > MAX_NODES:
            raise SuiteError(
                f"{path}: the YAML expands to more than {MAX_NODES:,} nodes (anchors and aliases "
                f"repeat what they name; line {node.start_mark.line + 1}); write the suite out plainly"
            )
        sizes[ident] = total


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_duplicate_keys(node: yaml.MappingNode, path: Path) -> None:
    seen: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode):
            continue
        line = key.start_mark.line + 1
        first = seen.get((key.tag, key.value))
        seen.setdefault((key.tag, key.value), line)
        if first is not None:
            raise SuiteError(
                f"{path}: line {line}: duplicate key {key.value!r} (first given on line {first}); "
                "YAML would keep only the last, so give each key once"
            )
