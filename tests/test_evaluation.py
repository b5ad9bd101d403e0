"""The lm-eval bridge on local task files: what lm-eval scores is what the model does."""

from __future__ import annotations

import torch

from initbench.inputs.data import materialize
from initbench.inputs.evaluation import evaluate, parse_scores, task_config
from initbench.inputs.models import load_model


def test_config_points_at_local_files_only(smoke_suite):
    data = materialize(smoke_suite.tasks[0])
    config = task_config("initbench_addition", data)
    assert config["dataset_path"] == "json"
    assert config["dataset_kwargs"]["data_files"]["test"] == str(data.files["test"])


def test_multiple_choice_accuracy_matches_a_direct_loglikelihood_computation(smoke_suite):
    task = smoke_suite.tasks[1]
    data = materialize(task)
    loaded = load_model(smoke_suite.model, torch.device("cpu"))
    model, tok = loaded.model, loaded.tokenizer
    scores, seconds = evaluate(model, tok, task.lm_eval_task, data, batch_size=4, limit=None, seed=0)
    (acc,) = [s for s in scores if s.metric == "acc"]

    correct = 0
    records = data.records("test")
    for record in records:
        context = tok(record["prompt"], add_special_tokens=False)["input_ids"]
        totals = []
        for choice in record["choices"]:
            continuation = tok(" " + choice, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([context + continuation])
            with torch.no_grad():
                logprobs = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
            targets = ids[0, len(context) :]
            totals.append(float(logprobs[len(context) - 1 :].gather(1, targets[:, None]).sum()))
        correct += int(max(range(len(totals)), key=totals.__getitem__) == record["label"])
    assert acc.value == correct / len(records)
    assert acc.stderr is not None and seconds > 0


def test_parse_scores_keeps_filters_and_stderr():
    parsed = parse_scores(
        {
            "alias": "t",
            "acc,none": 0.5,
            "acc_stderr,none": 0.1,
            "exact_match,flexible-extract": 0.25,
            "exact_match_stderr,flexible-extract": "N/A",
        }
    )
    assert [(s.metric, s.value, s.stderr) for s in parsed] == [
        ("acc", 0.5, 0.1),
        ("exact_match,flexible-extract", 0.25, None),
    ]
