"""The registry: built-ins come through the entry-point group; broken plugins are named."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from initbench import registry
from initbench.api import InitMethod
from initbench.registry import PluginError, describe_methods, get_method, method_names


def test_builtins_are_registered_through_the_entry_point_group():
    names = method_names()
    assert {"base", "lora", "pissa"} <= set(names)
    lora = get_method("lora")
    assert isinstance(lora, InitMethod) and lora.name == "lora" and lora.version
    assert get_method("base").is_reference and not get_method("base").trains
    assert get_method("pissa").default_alpha(8) == 8.0


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(PluginError, match="unknown method 'nope'.*lora"):
        get_method("nope")


class NotAMethod:
    pass


@pytest.mark.parametrize(
    "target, message",
    [
        ("no_such_module_xyz:Thing", "failed to import: ModuleNotFoundError"),
        (f"{__name__}:NotAMethod", "not a subclass of initbench.api.InitMethod"),
    ],
)
def test_broken_plugins_are_named_and_do_not_hide_others(monkeypatch, target, message):
    real = registry._entry_points()
    broken = EntryPoint(name="broken-init", value=target, group=registry.GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: {**real, "broken-init": broken})
    with pytest.raises(PluginError) as err:
        get_method("broken-init")
    assert "broken-init" in str(err.value) and message in str(err.value)
    listed = {m.name: m for m in describe_methods()}
    assert listed["broken-init"].error and not listed["lora"].error
