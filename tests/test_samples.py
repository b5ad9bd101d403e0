"""What the model said: per-sample records beside final runs, `initbench show`, and the chat template."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from initbench.cli import main
from initbench.inputs.data import materialize
from initbench.inputs.evaluation import evaluate
from initbench.inputs.models import load_model
from initbench.inputs.preflight import check_suite
from initbench.method.registry import get_method
from initbench.run.harness import run_one
from initbench.spec.suite import SuiteError, builtin_suite_dir, load_suite
from initbench.store import samples
from initbench.store.samples import SamplesError, read_samples, record, samples_path

SMOKE = (builtin_suite_dir() / "smoke.yaml").read_text()


@pytest.fixture(scope="module")
def tiny():
    loaded = load_model(load_suite("smoke").model, torch.device("cpu"))
    return loaded.model, loaded.tokenizer


# (smoke task, lm-eval task): generation with a filter, teacher forcing, multiple choice
TASKS = [
    ("addition", "initbench_addition"),
    ("addition", "initbench_addition_tf"),
    ("compare_sums", "initbench_compare_sums"),
]


@pytest.mark.parametrize("task_name, lm_eval_task", TASKS)
def test_keeping_samples_changes_no_score(tiny, smoke_suite, task_name, lm_eval_task):
    model, tokenizer = tiny
    data = materialize(smoke_suite.task(task_name))
    kwargs = dict(batch_size=4, limit=None, seed=3)
    plain, _ = evaluate(model, tokenizer, lm_eval_task, data, **kwargs)
    kept: list[dict] = []
    logged, _ = evaluate(model, tokenizer, lm_eval_task, data, keep_samples=kept.extend, **kwargs)
    assert logged == plain  # every metric, value and stderr, bit for bit
    rows = [record(s) for s in kept]
    test_records = data.records("test")
    assert sorted(r["doc_id"] for r in rows) == list(range(len(test_records)))
    assert [r["prompt"] for r in sorted(rows, key=lambda r: r["doc_id"])] == [d["prompt"] for d in test_records]
    for score in plain:  # the per-sample scores are what lm-eval averaged
        per_doc = [r["scores"] for r in map(_parsed, rows)]
        assert sum(s[score.metric] for s in per_doc) / len(per_doc) == pytest.approx(score.value, abs=1e-12)


def _parsed(row: dict) -> dict:
    return {**row, "scores": json.loads(row["scores"])}


def test_records_say_what_the_model_said():
    generated = record(
        {
            "doc_id": 4,
            "filter": "strict-match",
            "target": "42",
            "arguments": [["Question: 6*7?\nAnswer:", {"until": ["\n"]}]],
            "resps": [["The answer is 42.\n"]],
            "filtered_resps": ["42"],
            "metrics": ["exact_match"],
            "exact_match": 1.0,
        }
    )
    assert (generated["output"], generated["answer"], generated["target"]) == ("The answer is 42.\n", "42", "42")
    assert generated["continuations"] == [] and json.loads(generated["scores"]) == {"exact_match": 1.0}
    choice = record(
        {
            "doc_id": 0,
            "filter": "none",
            "target": 1,
            "arguments": [["Q:", " a"], ["Q:", " b"]],
            "resps": [[(-3.0, False)], [(-1.0, True)]],
            "filtered_resps": [(-3.0, False), (-1.0, True)],
            "metrics": ["acc"],
            "acc": 1.0,
        }
    )
    assert (choice["output"], choice["answer"], choice["target"]) == (" b", " b", " b")
    assert choice["loglikelihoods"] == [-3.0, -1.0] and choice["greedy"] == [False, True]
    forced = record(
        {
            "doc_id": 1,
            "filter": "none",
            "target": "12",
            "arguments": [["5+7=", "12"]],
            "resps": [[(-0.5, True)]],
            "filtered_resps": [(-0.5, True)],
            "metrics": ["gold_prob"],
            "gold_prob": 0.78,
        }
    )
    assert forced["output"] is None and forced["continuations"] == ["12"] and forced["target"] == "12"


def test_final_runs_keep_samples_trials_and_opted_out_runs_do_not(smoke_suite, tmp_path, monkeypatch):
    monkeypatch.setenv(samples.SAMPLES_ENV, "1")
    task, method = smoke_suite.task("compare_sums"), get_method("base")
    final = run_one(smoke_suite, method, task, 0, tmp_path)
    rows = read_samples(samples_path(final.path), run_id=f"smoke/base/compare_sums/seed0/{smoke_suite.spec_hash}")
    assert len(rows) == smoke_suite.eval.limit
    assert sum(r["scores"]["acc"] for r in rows) / len(rows) == final.scores["acc"]
    trial = run_one(smoke_suite, method, task, 0, tmp_path, lr=0.01, split="validation")
    assert trial.status == "ok" and not samples_path(trial.path).exists()
    monkeypatch.setenv(samples.SAMPLES_ENV, "0")
    again = run_one(smoke_suite, method, task, 0, tmp_path, force=True)
    assert again.scores == final.scores and not samples_path(again.path).exists()  # none stale left behind


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The results files of `base` on both smoke tasks, with their samples."""
    out = tmp_path_factory.mktemp("runs")
    suite = load_suite("smoke")
    return {t.name: run_one(suite, get_method("base"), t, 0, out).path for t in suite.tasks}


def test_show_prints_key_columns_scores_and_n_documents(two_runs, capsys):
    assert main(["show", str(two_runs["addition"]), "--samples", "2"]) == 0
    shown = capsys.readouterr().out
    assert "smoke/base/addition/seed0/" in shown and "exact_match (primary)" in shown
    assert "samples: 2 of 8 documents" in shown and "document 1" in shown and "document 2" not in shown
    assert "prompt:" in shown and "answer" in shown and "target: " in shown
    assert main(["show", str(samples_path(two_runs["compare_sums"])), "--samples", "0"]) == 0  # any of its files
    shown = capsys.readouterr().out
    assert "acc (primary)" in shown and "document" not in shown


def test_untrusted_sidecars_are_named(two_runs, capsys):
    addition, compare = two_runs["addition"], two_runs["compare_sums"]
    sidecar = samples_path(compare)
    kept = sidecar.read_bytes()
    try:
        shutil.copy(samples_path(addition), sidecar)  # another run's samples
        assert main(["show", str(compare)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(sidecar) in err[0] and "holds the samples of run smoke/base/addition" in err[0]
        sidecar.write_bytes(b"not parquet")
        assert main(["show", str(compare)]) == 2
        assert str(sidecar) in capsys.readouterr().err
        shutil.copy(compare, sidecar)  # a results file under a samples name
        with pytest.raises(SamplesError, match="not an initbench samples file"):
            read_samples(sidecar)
    finally:
        sidecar.write_bytes(kept)
    assert len(read_samples(sidecar)) == 8  # restored


def test_chat_template_is_a_suite_key_in_the_hash_only_when_on(tmp_path, smoke_suite):
    on = tmp_path / "on.yaml"
    on.write_text(SMOKE.replace("  limit: 8\n", "  limit: 8\n  chat_template: true\n"))
    off = tmp_path / "off.yaml"
    off.write_text(SMOKE.replace("  limit: 8\n", "  limit: 8\n  chat_template: false\n"))
    assert load_suite(str(off)).spec_hash == smoke_suite.spec_hash != load_suite(str(on)).spec_hash
    assert load_suite("mini").spec_hash == "c8890955bd618521"
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.replace("  limit: 8\n", "  limit: 8\n  chat_template: 1\n"))
    with pytest.raises(SuiteError, match="eval.chat_template.*bool"):
        load_suite(str(bad))
    problems = check_suite(load_suite(str(on)))  # the tiny tokenizer has no template
    assert any("key 'eval.chat_template' is true" in p and str(on) in p for p in problems)


def test_chat_template_reaches_the_prompts(tiny, smoke_suite):
    model, tokenizer = tiny
    data = materialize(smoke_suite.task("addition"))
    with pytest.raises(SuiteError, match="no chat template"):
        evaluate(model, tokenizer, "initbench_addition", data, batch_size=4, limit=2, seed=0, chat_template=True)
    chat = _with_template(
        tokenizer, "{% for m in messages %}Q:{{ m['content'] }}{% endfor %}{% if add_generation_prompt %} A:{% endif %}"
    )
    kept: list[dict] = []
    evaluate(
        model,
        chat,
        "initbench_addition",
        data,
        batch_size=4,
        limit=2,
        seed=0,
        chat_template=True,
        keep_samples=kept.extend,
    )
    prompts = sorted((s["doc_id"], record(s)["prompt"]) for s in kept)
    assert [p for _, p in prompts] == [f"Q:{d['prompt']} A:" for d in data.records("test")[:2]]


def _with_template(tokenizer, template: str):
    chat = copy.deepcopy(tokenizer)
    chat.chat_template = template
    return chat
