"""The real-data suites (math, commonsense, math-mini): loaders and formatters on the shared
public data, data-directory precedence and errors, the GSM8K answer extraction of the lm-eval
YAML, and each suite's lm-eval tasks end to end with the tiny model.

Reads ``../shared/data`` (relative to the repository root) and never the hub.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import SHARED_DATA

from initbench.inputs import datasets_io
from initbench.inputs.data import materialize
from initbench.inputs.datasets_io import DataUnavailable, data_dir, load_splits, use_data_dir
from initbench.spec import formatters
from initbench.spec.suite import SuiteError, list_suites, load_suite

needs_data = pytest.mark.skipif(
    not (SHARED_DATA / "gsm8k" / "test.jsonl").exists(),
    reason=f"shared real data not found at {SHARED_DATA} (see ../shared/data/README.md)",
)


@pytest.fixture(autouse=True)
def _no_data_dir(monkeypatch):
    """No data directory unless a test sets one, and the hub is never contacted."""
    monkeypatch.delenv(datasets_io.ENV_DATA_DIR, raising=False)
    use_data_dir(None)

    import datasets

    real_load = datasets.load_dataset

    def no_hub(path, *args, **kwargs):  # lm-eval's own `json` loads of local files go through
        if path in ("json", "csv", "parquet", "text"):
            return real_load(path, *args, **kwargs)
        raise AssertionError(f"a test tried to load {path!r} from the hub")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    yield
    use_data_dir(None)


def _task(suite_name: str, task_name: str):
    return load_suite(suite_name).task(task_name)


# --------------------------------------------------------------------------- suites


@pytest.mark.parametrize("path", list_suites(), ids=lambda p: p.stem)
def test_every_builtin_suite_loads(path):
    suite = load_suite(path.stem)
    assert suite.tasks and suite.spec_hash


def test_real_suites_name_their_data_by_hub_id_and_local_copy():
    math, mini, commonsense = load_suite("math"), load_suite("math-mini"), load_suite("commonsense")
    assert (math.model.source, math.model.id) == ("hub", "Qwen/Qwen3-0.6B-Base") and math.model.revision
    assert (mini.model.source, mini.model.id) == ("embedded", "smollm2-135m-instruct-q4_1")
    assert mini.eval.limit == 50 and mini.task("gsm8k").data.splits["train"].limit == 400
    assert math.task("gsm8k").data.splits["train"].hub.id == "meta-math/MetaMathQA"
    assert math.task("gsm8k").data.splits["test"].hub.id == "openai/gsm8k"
    assert [t.name for t in commonsense.tasks] == [
        "boolq",
        "piqa",
        "siqa",
        "hellaswag",
        "winogrande",
        "arc_easy",
        "arc_challenge",
        "openbookqa",
    ]
    for task in commonsense.tasks:
        assert task.data.splits["train"].hub.id == "zwhe99/commonsense_170k"
        assert task.data.splits["test"].hub.revision
    assert not commonsense.task("hellaswag").data.splits["test"].local


def test_suites_listing_shows_models_data_and_budgets(capsys):
    from initbench.cli import main

    assert main(["suites"]) == 0
    out = capsys.readouterr().out
    for fragment in (
        "math-mini",
        "commonsense",
        "Qwen/Qwen3-0.6B-Base@main",
        "meta-math/MetaMathQA",
        "zwhe99/commonsense_170k",
        "gsm8k/test.jsonl",
        "10,240,000 tokens",
        "eval limit 50",
    ):
        assert fragment in out


def test_a_bad_formatter_or_split_is_named(tmp_path):
    text = Path(load_suite("math-mini").path).read_text().replace("formatter: gsm8k}]", "formatter: gsm8kk}]", 1)
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(SuiteError, match=r"tasks\[0\]\.data\.splits\.train\.local\[0\]\.formatter.*'gsm8kk'"):
        load_suite(str(tmp_path / "bad.yaml"))


# --------------------------------------------------------------------------- loaders and formatters

COMMONSENSE_TEST_ROWS = {
    "boolq": 3270,
    "piqa": 1838,
    "siqa": 1954,
    "winogrande": 1267,
    "arc_easy": 2376,
    "arc_challenge": 1172,
    "openbookqa": 500,
}


@needs_data
def test_gsm8k_loads_from_the_data_dir_with_a_known_first_record():
    records, digest = load_splits(_task("math-mini", "gsm8k").data.splits, "k", "w", SHARED_DATA)
    assert len(records["train"]) == 400 and len(records["test"]) == 1319
    first = records["test"][0]
    assert first["prompt"].startswith("Question: Janet\u2019s ducks lay 16 eggs per day.")
    assert first["prompt"].endswith("\nAnswer:")
    assert first["completion"] == (
        " Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n"
        "She makes 9 * 2 = $18 every day at the farmer\u2019s market.\n#### 18"
    )
    assert first["target"] == "18" and len(digest) == 64


@needs_data
def test_math_trains_on_the_llm_adapters_math_set_offline():
    records, _ = load_splits(_task("math", "gsm8k").data.splits, "k", "w", SHARED_DATA)
    assert len(records["train"]) == 3260
    first = records["train"][0]
    assert first["prompt"].startswith("Question: Julia played tag with 16 kids on monday.")
    assert first["completion"].startswith(" She played with 16 kids on Monday.")
    assert first["completion"].endswith("The answer is 4.") and first["target"] == "4"


@needs_data
@pytest.mark.parametrize("name, rows", COMMONSENSE_TEST_ROWS.items())
def test_commonsense_sets_parse_into_multiple_choice_records(name, rows):
    records, _ = load_splits(_task("commonsense", name).data.splits, "k", "w", SHARED_DATA)
    assert len(records["test"]) == rows
    assert len(records["train"]) == 9427 + 2251 + 1119 + 4957  # boolq, ARC-e, ARC-c, OBQA train
    for record in records["test"] + records["train"]:
        assert set(record) == {"prompt", "completion", "choices", "label"}
        assert record["prompt"].startswith("Question: ") and record["prompt"].endswith("\nAnswer:")
        assert 2 <= len(record["choices"]) <= 5 and all(record["choices"])
        assert record["completion"] == " " + record["choices"][record["label"]]
        assert "Answer format" not in record["prompt"] and "Answer1:" not in record["prompt"]


@needs_data
def test_known_commonsense_first_records():
    arc, _ = load_splits(_task("commonsense", "arc_challenge").data.splits, "k", "w", SHARED_DATA)
    assert arc["test"][0] == {
        "prompt": "Question: An astronomer observes that a planet rotates faster after a meteorite impact. "
        "Which is the most likely effect of this increase in rotation?\nAnswer:",
        "completion": " Planetary days will become shorter.",
        "choices": [
            "Planetary density will decrease.",
            "Planetary years will become longer.",
            "Planetary days will become shorter.",
            "Planetary gravity will become stronger.",
        ],
        "label": 2,
    }
    wino, _ = load_splits(_task("commonsense", "winogrande").data.splits, "k", "w", SHARED_DATA)
    assert wino["test"][0]["choices"] == ["Sarah", "Maria"] and wino["test"][0]["label"] == 1
    boolq, _ = load_splits(_task("commonsense", "boolq").data.splits, "k", "w", SHARED_DATA)
    assert boolq["test"][0]["choices"] == ["true", "false"] and boolq["test"][0]["label"] == 1


def test_hub_formatters_make_the_same_records_as_the_llm_adapters_copies():
    """The hub rows' formatters (online road) agree with the LLM-Adapters parser (offline road)."""
    f = formatters.FORMATTERS
    adapters = f["llm_adapters_commonsense"](
        {
            "instruction": "Please choose the correct answer to the question: Which is a mammal?\n\n"
            "Answer1: trout Answer2: whale Answer3: shark\n\nAnswer format: answer1/answer2/answer3",
            "input": "",
            "output": "the correct answer is answer2",
            "answer": "answer2",
        }
    )
    hub = f["ai2_arc"](
        {
            "question": "Which is a mammal?",
            "answerKey": "B",
            "choices": {"text": ["trout", "whale", "shark"], "label": ["A", "B", "C"]},
        }
    )
    assert adapters == hub
    assert f["boolq"]({"question": "is water wet", "passage": "...", "label": 1})["label"] == 0
    assert (
        f["siqa"]({"context": "C.", "question": "Q?", "answerA": "a", "answerB": "b", "answerC": "c", "label": "3"})[
            "completion"
        ]
        == " c"
    )
    assert f["winogrande"]({"sentence": "A _ B.", "option1": "x", "option2": "y", "answer": "2"})["label"] == 1
    swag = f["hellaswag"](
        {
            "activity_label": "Cooking",
            "ctx_a": "A man stirs.",
            "ctx_b": "he",
            "endings": ["adds salt [title] now.", "b", "c", "d"],
            "label": "0",
        }
    )
    assert swag["prompt"] == "Question: Cooking: A man stirs. He\nAnswer:" and swag["choices"][0] == "adds salt. now."
    meta = f["metamathqa"]({"query": "1+1?", "response": "1+1=2\nThe answer is: 2", "type": "GSM_Rephrased"})
    assert meta["target"] == "2" and meta["completion"].endswith("The answer is: 2")


# --------------------------------------------------------------------------- data directory


def test_data_dir_option_beats_the_environment(monkeypatch, tmp_path):
    assert data_dir() == (None, "")  # neither: the hub
    monkeypatch.setenv("INITBENCH_DATA_DIR", str(tmp_path / "env"))
    assert data_dir() == (tmp_path / "env", f"INITBENCH_DATA_DIR={tmp_path / 'env'}")
    use_data_dir(tmp_path / "opt")
    assert data_dir() == (tmp_path / "opt", f"--data-dir {tmp_path / 'opt'}")


@needs_data
def test_materialize_reads_the_data_dir_and_hashes_the_bytes_read(monkeypatch, tmp_path):
    task = _task("math-mini", "gsm8k")
    monkeypatch.setenv("INITBENCH_DATA_DIR", str(SHARED_DATA))
    shared = materialize(task)
    assert len(shared.records("test")) == 1319 and len(shared.records("train")) == 400

    copy = tmp_path / "data" / "gsm8k"  # a copy that differs only in test rows past the first 50
    copy.mkdir(parents=True)
    (copy / "train.jsonl").write_bytes((SHARED_DATA / "gsm8k" / "train.jsonl").read_bytes())
    (copy / "test.jsonl").write_text("".join((SHARED_DATA / "gsm8k" / "test.jsonl").read_text().splitlines(True)[:60]))
    use_data_dir(tmp_path / "data")  # --data-dir wins over the environment
    local = materialize(task)
    assert len(local.records("test")) == 60
    assert local.content_hash != shared.content_hash
    assert local.records("train") == shared.records("train")


def test_a_missing_local_copy_names_the_file_the_key_and_the_fix(tmp_path):
    use_data_dir(tmp_path)
    with pytest.raises(DataUnavailable) as err:
        materialize(_task("math-mini", "gsm8k"), "tasks/math-mini.yaml")
    message = str(err.value)
    assert "tasks/math-mini.yaml: key 'tasks.gsm8k.data.splits.test.local[0].path'" in message
    assert f"no local copy of gsm8k/test.jsonl under --data-dir {tmp_path}" in message
    assert "pass --data-dir" in message


def test_a_hub_only_split_is_unavailable_from_a_data_dir(tmp_path):
    use_data_dir(tmp_path)
    with pytest.raises(
        DataUnavailable, match=r"splits\.test': no local copy of this split \(hub only: Rowan/hellaswag"
    ):
        materialize(_task("commonsense", "hellaswag"))


def test_without_a_data_dir_a_failed_hub_load_says_to_pass_one():
    with pytest.raises(DataUnavailable) as err:  # the autouse fixture makes every hub load fail
        materialize(_task("math-mini", "gsm8k"), "tasks/math-mini.yaml")
    message = str(err.value)
    assert "could not load openai/gsm8k@main" in message
    assert "pass --data-dir (or set INITBENCH_DATA_DIR) to a folder holding gsm8k/" in message


@needs_data
def test_evaluate_skips_hub_only_tasks_offline_and_rejects_missing_copies(capsys, tmp_path):
    from initbench.cli import UsageError, _offline_tasks, main

    suite = load_suite("commonsense")
    tasks = _offline_tasks(suite, SHARED_DATA)
    assert [t.name for t in tasks] == [t.name for t in suite.tasks if t.name != "hellaswag"]
    assert "skipping task 'hellaswag' offline" in capsys.readouterr().err
    use_data_dir(None)
    with pytest.raises(
        UsageError,
        match=r"tasks\[0\].data' \(boolq\): no local copy of commonsense/boolq/train.json.*"
        r"commonsense/boolq/test.json under --data-dir",
    ):
        _offline_tasks(suite, tmp_path)
    assert main(["evaluate", "--suite", "math-mini", "--method", "lora", "--data-dir", str(tmp_path / "nope")]) == 2
    assert "--data-dir" in capsys.readouterr().err


# --------------------------------------------------------------------------- GSM8K extraction


@needs_data
def test_gsm8k_yaml_filters_extract_every_gold_answer_from_its_own_solution():
    """lm-eval's own filter and metric classes, configured from tasks/lm_eval/initbench_gsm8k.yaml."""
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters import build_filter_ensemble
    from lm_eval.tasks._yaml_loader import load_yaml

    from initbench.inputs.evaluation import task_yaml_path

    config = load_yaml(task_yaml_path("initbench_gsm8k"))
    ensembles = [
        build_filter_ensemble(
            f["name"], [(step["function"], {k: v for k, v in step.items() if k != "function"}) for step in f["filter"]]
        )
        for f in config["filter_list"]
    ]
    assert {e.name for e in ensembles} == {"strict-match", "flexible-extract"}
    (metric,) = config["metric_list"]
    options = {k: metric[k] for k in ("regexes_to_ignore", "ignore_case", "ignore_punctuation")}

    rows = [json.loads(line) for line in (SHARED_DATA / "gsm8k" / "test.jsonl").read_text().splitlines()]
    records = [formatters.gsm8k(row) for row in rows]
    golds = [r["target"] for r in records]
    assert len(golds) == 1319
    for solutions in ([r["answer"] for r in rows], [r["completion"] for r in records]):
        for ensemble in ensembles:
            resps = [[s] for s in solutions]
            for f in ensemble.filters:
                resps = f().apply(resps, records)
            extracted = [r[0] if isinstance(r, list) else r for r in resps]
            wrong = [
                (g, e)
                for g, e in zip(golds, extracted)
                if exact_match_hf_evaluate([e], [g], **options)["exact_match"] != 1.0
            ]
            assert not wrong, f"{ensemble.name}: {len(wrong)} wrong, e.g. {wrong[:3]}"
    # The other answer styles the training sets teach are caught by strict-match too.
    strict = next(e for e in ensembles if e.name == "strict-match")
    resps = [["so 3 + 4 = 7. The answer is 7."], ["... The answer is: $1,200"], ["no number"]]
    for f in strict.filters:
        resps = f().apply(resps, [{}] * 3)
    assert list(resps) == ["7.", "1,200", "[invalid]"]


# --------------------------------------------------------------------------- end to end


def _tiny(suite, train_limit: int = 8):
    """The suite with the tiny test model, a 2-step budget and a few test examples."""
    model = dataclasses.replace(
        suite.model,
        source="tiny",
        id="tiny-llama",
        revision="main",
        tiny={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
        },
    )
    budget = dataclasses.replace(
        suite.budget,
        steps=2,
        batch_size=2,
        max_length=1024,
        calibration=dataclasses.replace(suite.budget.calibration, examples=2, batch_size=2),
    )
    tasks = []
    for task in suite.tasks:
        splits = dict(task.data.splits)
        splits["train"] = dataclasses.replace(splits["train"], limit=train_limit)
        tasks.append(dataclasses.replace(task, data=dataclasses.replace(task.data, splits=splits)))
    return dataclasses.replace(
        suite, model=model, budget=budget, tasks=tasks, eval=dataclasses.replace(suite.eval, batch_size=2, limit=2)
    )


@needs_data
@pytest.mark.parametrize("suite_name", ["math", "commonsense"])
def test_real_suite_tasks_run_end_to_end_with_the_tiny_model(suite_name, tmp_path):
    from initbench.method.registry import get_method
    from initbench.run.harness import run_one

    use_data_dir(SHARED_DATA)
    suite = _tiny(load_suite(suite_name))
    lora = get_method("lora")
    for task in suite.tasks:
        if datasets_io.offline_unavailable(task.data.splits):
            continue  # HellaSwag: hub only
        outcome = run_one(suite, lora, task, 0, tmp_path)
        assert outcome.status == "ok", outcome.error
        if task.lm_eval_task == "initbench_gsm8k":
            assert {"exact_match,strict-match", "exact_match,flexible-extract"} <= set(outcome.scores)
        else:
            assert {"acc", "acc_norm"} <= set(outcome.scores)
        assert all(0.0 <= v <= 1.0 for v in outcome.scores.values())
        table = pq.read_table(outcome.path).to_pylist()
        assert {row["data_hash"] for row in table} == {materialize(task).content_hash}
        assert {row["eval_limit"] for row in table} == {2}


def test_a_formatter_of_the_suites_own_is_imported_only_when_trusted(tmp_path, monkeypatch):
    """A new data set's formatter lives beside its suite (module:function), under the generators' trust rule."""
    (tmp_path / "my_formatters.py").write_text(
        "def shout(row):\n    return {'prompt': row['q'].upper(), 'completion': ' ' + row['a']}\n"
    )
    rows = [{"q": f"what is {i}?", "a": str(i)} for i in range(4)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.syspath_prepend(str(tmp_path))
    splits = {"test": {"local": [{"path": "rows.jsonl", "formatter": "my_formatters:shout"}]}}
    text = Path(load_suite("math-mini").path).read_text()
    spec = yaml.safe_load(text)
    spec["tasks"] = [{**spec["tasks"][0], "data": {"splits": {**splits, "train": splits["test"]}}}]
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(spec))
    monkeypatch.delenv("INITBENCH_ALLOW_MODULES", raising=False)
    with pytest.raises(
        SuiteError, match=r"formatter' \('my_formatters:shout'\).*INITBENCH_ALLOW_MODULES=my_formatters"
    ):
        load_suite(str(path))
    monkeypatch.setenv("INITBENCH_ALLOW_MODULES", "my_formatters")
    suite = load_suite(str(path))
    records, _ = load_splits(suite.tasks[0].data.splits, "tasks[0].data.splits", str(path), tmp_path)
    assert records["test"][1] == {"prompt": "WHAT IS 1?", "completion": " 1"}
