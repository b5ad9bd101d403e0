"""README, "A new data set": the worked AQuA example (a suite, its formatter and its lm-eval task
beside it, trusted through the environment) runs as written, with the tiny test model."""

from __future__ import annotations

import json
import random
import re

import yaml
from conftest import REPO

from initbench.cli import main
from initbench.selection.counted import read_results
from initbench.spec.suite import builtin_suite_dir

SECTION = "### A new data set"


def _blocks() -> tuple[dict[str, str], list[str]]:
    """The section's files (code blocks whose first line is ``# my_suites/...``) and its shell lines."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ")]
    files, shell = {}, []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", section, re.S):
        first = body.splitlines()[0]
        if match := re.fullmatch(r"# (my_suites/\S+)", first):
            files[match.group(1)] = body
        elif lang == "bash":
            shell += [line.split("#")[0].strip() for line in body.splitlines() if line.split("#")[0].strip()]
    return files, shell


def _rows(n: int, seed: int) -> list[dict]:
    """AQuA-RAT-shaped rows: question, five lettered options, a rationale, the correct letter."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        options = [a + b + d for d in (0, 1, 2, 3, 4)]
        rng.shuffle(options)
        rows.append(
            {
                "question": f"What is {a} + {b}?",
                "options": [f"{letter}){o}" for letter, o in zip("ABCDE", options)],
                "rationale": f"{a} + {b} = {a + b}",
                "correct": "ABCDE"[options.index(a + b)],
            }
        )
    return rows


def test_the_readme_aqua_example_runs_as_written(tmp_path, monkeypatch, capsys):
    files, shell = _blocks()
    assert set(files) == {"my_suites/aqua.yaml", "my_suites/aqua_format.py", "my_suites/lm_eval/my_aqua.yaml"}
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    # the README's suite, on the tiny test model with the smoke budget (seconds, not the 135M model)
    suite = yaml.safe_load(files["my_suites/aqua.yaml"])
    smoke = yaml.safe_load((builtin_suite_dir() / "smoke.yaml").read_text())
    suite.update(model=smoke["model"], budget=smoke["budget"], eval={"batch_size": 4, "limit": 4})
    (tmp_path / "my_suites/aqua.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    data = tmp_path / "data" / "aqua"
    data.mkdir(parents=True)
    for split, n, seed in (("train", 16, 0), ("test", 4, 1)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in _rows(n, seed)))

    monkeypatch.chdir(tmp_path)
    exports = [line for line in shell if line.startswith("export ")]
    commands = [line for line in shell if line.startswith("initbench ")]
    assert len(exports) == 3 and len(commands) == 2
    out = tmp_path / "runs"
    for name in ("INITBENCH_ALLOW_MODULES", "INITBENCH_LM_EVAL_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert main(_argv(commands[0], tmp_path)) == 2  # not trusted yet: exit 2, naming what to export
    assert "INITBENCH_LM_EVAL_PATH=" in capsys.readouterr().err
    for line in exports:
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.replace("$PWD", str(tmp_path))
        monkeypatch.setenv(name, value)
        if name == "PYTHONPATH":  # what a fresh `initbench` process would put on its import path
            monkeypatch.syspath_prepend(value)
    assert main(_argv(commands[0], tmp_path)) == 0  # initbench check
    assert main(_argv(commands[1], tmp_path) + ["--out", str(out)]) == 0  # initbench evaluate
    rows = read_results(out).to_pylist()  # one row per (run, metric)
    assert sorted((r["method"], r["metric"]) for r in rows) == [
        (m, k) for m in ("lora", "pissa") for k in ("acc", "acc_norm")
    ]
    assert all(r["status"] == "ok" and r["lm_eval_task"] == "my_aqua" and r["primary_metric"] == "acc" for r in rows)


def _argv(command: str, tmp_path) -> list[str]:
    return [str(tmp_path / "data") if word == "DIR" else word for word in command.split()[1:]]
