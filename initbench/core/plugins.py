"""Entry points of one group by name, as every kind of plugin (methods, executors) is found.

A name that two distributions register is kept with both entry points, so the caller can refuse it
naming both (no plugin silently replaces another); one distribution seen twice on the path (an
egg-info beside an install) counts once.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points


class PluginError(RuntimeError):
    """A registered plugin (a method, an executor) cannot be loaded or used; the message names it."""


def entry_points_by_name(group: str) -> dict[str, list[EntryPoint]]:
    """Every entry point of ``group`` by name, sorted by name; a name two distributions register has two."""
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=group):
        same = found.setdefault(ep.name, [])
        if not any(package(o) == package(ep) and o.value == ep.value for o in same):  # one dist seen twice
            same.append(ep)
    return dict(sorted(found.items()))


def conflict(kind: str, name: str, eps: list[EntryPoint]) -> str:
    """The error for a ``kind`` (``method``, ``executor``) name that several distributions register."""
    who = " and ".join(f"{package(ep)}{' ' + ep.dist.version if ep.dist else ''} ({ep.value})" for ep in eps)
    return (
        f"{kind} {name!r} is registered by more than one distribution: {who}; a name must mean one "
        f"{kind}, so uninstall one of them (pip uninstall {package(eps[-1])})"
    )


def package(ep: EntryPoint) -> str:
    """The distribution that registers ``ep`` ("?" when unknown)."""
    return ep.dist.name if ep.dist else "?"
