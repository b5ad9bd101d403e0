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


def _fake_distribution(folder, name: str, entry_points: str) -> None:
    """A tiny installed distribution (a ``.dist-info`` folder) that ``importlib.metadata`` finds."""
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{registry.GROUP}]\n{entry_points}\n")


def test_a_name_registered_twice_is_an_error_naming_both_distributions(tmp_path, monkeypatch):
    # A plugin claiming `lora` used to replace the built-in silently (rows said method_package=evilplug).
    _fake_distribution(tmp_path, "evilplug", "lora = evilplug:Evil\nevil-only = evilplug:Evil")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as err:
        get_method("lora")
    message = str(err.value)
    assert "'lora'" in message and "initbench" in message and "evilplug" in message
    assert "initbench_baselines.lora:LoRA" in message and "evilplug:Evil" in message
    listed = {m.name: m for m in describe_methods()}
    assert "evilplug" in listed["lora"].error  # `initbench methods` shows the conflict ...
    assert not listed["pissa"].error and get_method("pissa").name == "pissa"  # ... and hides nothing else


def test_one_distribution_found_twice_is_not_a_conflict(tmp_path, monkeypatch):
    for where in ("a", "b"):  # the same dist on two sys.path entries (an egg-info beside an install)
        _fake_distribution(tmp_path / where, "sameplug", "same-init = sameplug:Init")
        monkeypatch.syspath_prepend(str(tmp_path / where))
    assert len(registry._all_entry_points()["same-init"]) == 1


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/b", "..", "bad\nname"])
def test_unsafe_method_names_are_refused(name):
    with pytest.raises(PluginError, match="folder names"):
        get_method(name)
