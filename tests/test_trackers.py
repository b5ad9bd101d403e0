"""--report-to: each run's curve, metadata and scores reach W&B, trackio or TensorBoard; --no-samples reaches workers."""

from __future__ import annotations

import sys
import types

import pyarrow.parquet as pq
import pytest
from conftest import quick_smoke_suite

from initbench.cli import main
from initbench.method.registry import get_method
from initbench.run.harness import run_one
from initbench.spec.suite import load_suite
from initbench.store import samples
from initbench.store.results import CURVE_SUFFIX, RESULTS_SUFFIX
from initbench.store.samples import run_file, samples_path
from initbench.sweeps.trackers import TensorBoardTracker, TrackerError, check_installed, log_run, parse_report_to


class FakeRun:
    """What ``wandb.init`` / ``trackio.init`` return, recording every call."""

    def __init__(self, calls: list, kwargs: dict):
        self.calls, self.kwargs, self.logged, self.finished = calls, kwargs, [], False
        self.summary = {}
        calls.append(self)

    def log(self, values, step=None):
        self.logged.append((step, dict(values)))

    def finish(self):
        self.finished = True


def fake_tracker_module(name: str, calls: list) -> types.ModuleType:
    module = types.ModuleType(name)
    module.init = lambda **kwargs: FakeRun(calls, kwargs)
    return module


def test_report_to_is_parsed_like_transformers():
    assert parse_report_to(["none"]) == [] and parse_report_to(None) == []
    assert parse_report_to(["wandb", "tensorboard,trackio"]) == ["wandb", "tensorboard", "trackio"]
    with pytest.raises(TrackerError, match="--report-to mlflow: not a tracker; one of wandb, trackio, tensorboard"):
        parse_report_to(["mlflow"])
    with pytest.raises(TrackerError, match="'none' cannot go with a tracker"):
        parse_report_to(["none", "wandb"])


def test_a_missing_tracker_names_its_extra_before_any_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trackio", None)  # import trackio raises ImportError
    with pytest.raises(TrackerError, match=r"pip install 'initbench\[trackio\]'"):
        check_installed(["trackio"])
    out = tmp_path / "runs"
    assert main(["evaluate", "--suite", "smoke", "--method", "lora", "--out", str(out), "--report-to", "trackio"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "initbench[trackio]" in err[0]
    assert not list(out.rglob(f"*{RESULTS_SUFFIX}"))  # nothing computed


def test_wandb_and_trackio_get_the_recorded_curve_metadata_and_scores(tmp_path, monkeypatch):
    calls: list[FakeRun] = []
    for name in ("wandb", "trackio"):
        monkeypatch.setitem(sys.modules, name, fake_tracker_module(name, calls))
    monkeypatch.setenv("WANDB_PROJECT", "my-inits")
    monkeypatch.delenv("TRACKIO_PROJECT", raising=False)
    suite = quick_smoke_suite(tmp_path, steps=3)
    out = tmp_path / "runs"
    assert (
        main(
            [
                "evaluate",
                "--suite",
                str(suite),
                "--method",
                "lora",
                "--out",
                str(out),
                "--report-to",
                "wandb",
                "trackio",
            ]
        )
        == 0
    )
    (results,) = out.rglob(f"*{RESULTS_SUFFIX}")
    rows = pq.read_table(results).to_pylist()
    curve = pq.read_table(run_file(results, CURVE_SUFFIX)).to_pylist()
    assert [c.kwargs["project"] for c in calls] == ["my-inits", "initbench"]
    for run in calls:
        assert (
            run.finished and run.kwargs["name"] == rows[0]["run_id"] and run.kwargs["group"].endswith("/lora/addition")
        )
        assert run.kwargs["config"]["learning_rate"] == rows[0]["learning_rate"]
        assert run.kwargs["config"]["start_time"].startswith(str(rows[0]["start_time"].date()))
        assert [step for step, _ in run.logged] == [p["step"] for p in curve] == [1, 2, 3]
        assert [values["train/loss"] for _, values in run.logged] == [p["loss"] for p in curve]
        assert run.logged[-1][1]["eval/exact_match"] == rows[0]["value"]
        assert run.summary == {"status": "ok", "eval/exact_match": rows[0]["value"]}


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    suite = load_suite("smoke")
    return run_one(suite, get_method("lora"), suite.task("compare_sums"), 0, out).path


def test_tensorboard_gets_the_curve_and_scores(one_run, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert log_run(one_run, [TensorBoardTracker(tmp_path)]) == []
    (folder,) = {p.parent for p in tmp_path.rglob("events.out.tfevents.*")}
    assert folder.relative_to(tmp_path).parts[:3] == ("smoke", "lora", "compare_sums")
    events = EventAccumulator(str(folder))
    events.Reload()
    curve = pq.read_table(run_file(one_run, CURVE_SUFFIX)).to_pylist()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [p["step"] for p in curve]
    assert [e.value for e in losses] == pytest.approx([p["loss"] for p in curve], rel=1e-6)  # stored as float32
    rows = pq.read_table(one_run).to_pylist()
    (acc,) = events.Scalars("eval/acc")
    assert acc.step == curve[-1]["step"] and acc.value == pytest.approx(
        next(r["value"] for r in rows if r["metric"] == "acc")
    )


def test_a_failing_tracker_is_reported_not_raised(one_run):
    class Broken:
        def start(self, run_id, group, config):
            raise ConnectionError("no network")

    (failure,) = log_run(one_run, [Broken()])
    assert "ConnectionError: no network" in failure


def test_no_samples_reaches_sweep_workers(tmp_path, monkeypatch):
    monkeypatch.setenv(samples.SAMPLES_ENV, "1")
    suite = quick_smoke_suite(tmp_path)
    out = tmp_path / "runs"
    assert main(["sweep", "--suite", str(suite), "--method", "base", "--out", str(out), "--no-samples"]) == 0
    (results,) = out.rglob(f"*{RESULTS_SUFFIX}")
    assert not samples_path(results).exists()
    monkeypatch.setenv(samples.SAMPLES_ENV, "1")
    assert main(["sweep", "--suite", str(suite), "--method", "base", "--out", str(out), "--force"]) == 0
    assert samples_path(results).exists()
