"""Method registry: every init method is found through the ``initbench.methods`` entry-point group.

Built-in baselines are registered in initbench's own ``pyproject.toml`` through
the same group a third-party package uses, so both travel the same road.  A
plugin that fails to import, or is not an ``InitMethod``, is reported by name
and never hides the others.  A name two distributions register (a plugin claiming
``lora``) is an error naming both, for that name only: no plugin silently replaces another.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint

from initbench.core.plugins import PluginError, conflict, entry_points_by_name, package
from initbench.method.api import InitMethod
from initbench.spec.trust import name_problem

GROUP = "initbench.methods"


@dataclass(frozen=True)
class MethodInfo:
    """What ``initbench methods`` lists for one entry point, loadable or not."""

    name: str
    package: str
    version: str
    target: str
    summary: str
    paper: str
    error: str = ""


def _all_entry_points() -> dict[str, list[EntryPoint]]:
    """Every entry point of the group by name; a name two distributions register has two."""
    return entry_points_by_name(GROUP)


def _entry_points() -> dict[str, EntryPoint]:
    """One entry point per name (the first found; a conflict is reported by ``get_method``)."""
    return {name: eps[0] for name, eps in _all_entry_points().items()}


def method_names() -> list[str]:
    return list(_entry_points())


def get_method(name: str) -> InitMethod:
    """Instantiate the method registered as ``name``; raises PluginError naming the plugin.

    ``base+variant[+variant...]`` (e.g. ``pissa+rslora+lora-plus``) wraps the registered method
    ``base`` in :class:`initbench.method.variants.VariantMethod`; the full string is the method's name.
    ``module:ClassName`` loads an unregistered ``InitMethod`` subclass by import path (for trying a
    method before packaging it; the leaderboard takes registered methods)."""
    if "+" in name:
        from initbench.method.variants import VariantMethod, check_variants

        base_name, *variants = name.split("+")
        base = get_method(base_name)
        problem = check_variants(base, variants)
        if problem:
            raise PluginError(f"method {name!r}: {problem}")
        method = VariantMethod(base, variants)
        method.name, method.version = name, base.version
        return method
    problem = name_problem(name)
    if problem:
        raise PluginError(f"method name {name!r} {problem}; method names become folder names of results")
    registered = _all_entry_points().get(name, [])
    if len(registered) > 1:
        raise PluginError(conflict("method", name, registered))
    eps = _entry_points()
    if name in eps:
        ep = eps[name]
        where, load, version = (
            f"method {name!r} ({ep.value}, package {package(ep)})",
            ep.load,
            ep.dist.version if ep.dist else "",
        )
    elif ":" in name:  # an unregistered method by import path, e.g. while writing a plugin
        where, version = f"method {name!r} (import path)", ""
        load = EntryPoint(name=name, value=name, group=GROUP).load
    else:
        raise PluginError(
            f"unknown method {name!r}; registered: {', '.join(eps) or 'none'} "
            "(or give an import path, module:ClassName)"
        )
    try:
        target = load()
    except Exception as err:  # a broken plugin must not take the CLI down
        raise PluginError(f"{where} failed to import: {type(err).__name__}: {err}") from err
    if not (isinstance(target, type) and issubclass(target, InitMethod)):
        raise PluginError(f"{where} is not a subclass of initbench.method.api.InitMethod")
    try:
        method = target()
    except Exception as err:
        raise PluginError(f"{where} could not be constructed: {type(err).__name__}: {err}") from err
    method.name, method.version = name, version
    return method


def describe_methods() -> list[MethodInfo]:
    """One MethodInfo per registered entry point; broken ones carry their error."""
    infos = []
    for name, ep in _entry_points().items():
        dist, version = package(ep), ep.dist.version if ep.dist else ""
        try:
            method = get_method(name)
        except PluginError as err:
            infos.append(MethodInfo(name, dist, version, ep.value, "", "", error=str(err)))
            continue
        infos.append(MethodInfo(name, dist, version, ep.value, method.summary, method.paper))
    return infos
