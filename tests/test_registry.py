"""The registry: built-ins come through the entry-point group; broken plugins are named."""

from __future__ import annotations

import re
from importlib.metadata import EntryPoint

import pytest

from initbench.api import InitMethod
from initbench.method import registry
from initbench.method.registry import PluginError, describe_methods, get_method, method_names


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
        (f"{__name__}:NotAMethod", "not a subclass of initbench.method.api.InitMethod"),
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


def _fake_distribution(folder, name: str, entry_points: str, group: str = registry.GROUP) -> None:
    """A tiny installed distribution (a ``.dist-info`` folder) that ``importlib.metadata`` finds."""
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{entry_points}\n")


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


# --------------------------------------------------------------------------- executors (issue 15 item 4)

RECORDING_EXECUTOR = """
from initbench.sweeps.executors import InlineExecutor


class Recording:
    def __init__(self, options):
        self.options = options

    def run(self, specs, report):
        (self.options.out / "recording-ran").write_text(f"{len(specs)} runs, workers={self.options.workers}")
        yield from InlineExecutor().run(specs, report)


def make(options):
    return Recording(options)


def not_an_executor(options):
    return 42
"""


def test_a_plugin_executor_runs_a_sweep_by_its_entry_point_name(tmp_path, monkeypatch):
    from conftest import quick_smoke_suite

    from initbench.cli import main
    from initbench.selection.counted import read_results
    from initbench.sweeps.executors import GROUP, executor_names

    (tmp_path / "recplug.py").write_text(RECORDING_EXECUTOR)
    _fake_distribution(tmp_path, "recplug", "recording = recplug:make", group=GROUP)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert executor_names() == ["inline", "local", "ray", "slurm", "recording"]
    suite, out = quick_smoke_suite(tmp_path), tmp_path / "runs"
    assert (
        main(
            [
                "sweep",
                "--suite",
                str(suite),
                "--method",
                "base",
                "--seeds",
                "0",
                "--executor",
                "recording",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "recording-ran").read_text() == "1 runs, workers=1"
    assert read_results(out).column("status").to_pylist() == ["ok"]


@pytest.mark.parametrize(
    "entry, message",
    [
        ("local = recplug:make", "executor 'local' is built into initbench and also registered by recplug"),
        (
            "broken = no_such_module_xyz:make",
            "executor 'broken' (no_such_module_xyz:make, package recplug) failed to load",
        ),
        ("broken = recplug:not_an_executor", "returned int, not an executor"),
    ],
)
def test_a_bad_executor_plugin_is_exit_2_naming_it(tmp_path, monkeypatch, capsys, entry, message):
    from conftest import quick_smoke_suite

    from initbench.cli import main
    from initbench.sweeps.executors import GROUP, make_executor

    (tmp_path / "recplug.py").write_text(RECORDING_EXECUTOR)
    _fake_distribution(tmp_path, "recplug", entry, group=GROUP)
    monkeypatch.syspath_prepend(str(tmp_path))
    name = entry.split(" = ")[0]
    with pytest.raises(PluginError, match=re.escape(message)):
        make_executor(name, out=tmp_path)
    out = tmp_path / "runs"
    assert (
        main(
            [
                "sweep",
                "--suite",
                str(quick_smoke_suite(tmp_path)),
                "--method",
                "base",
                "--seeds",
                "0",
                "--executor",
                name,
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert message in capsys.readouterr().err and not list(out.rglob("*.parquet"))


def test_an_unknown_executor_is_exit_2_listing_the_known_ones(tmp_path, capsys):
    from conftest import quick_smoke_suite

    from initbench.cli import main

    assert (
        main(
            [
                "sweep",
                "--suite",
                str(quick_smoke_suite(tmp_path)),
                "--method",
                "base",
                "--executor",
                "nope",
                "--out",
                str(tmp_path / "runs"),
            ]
        )
        == 2
    )
    assert "--executor nope: unknown; one of inline, local, ray, slurm" in capsys.readouterr().err
