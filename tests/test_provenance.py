"""Code identity in every row: git commit and dirty flag, source hash, threads, CPU, and what
``reproduce`` names when two rows' identities differ."""

from __future__ import annotations

import json
import subprocess

import pyarrow.parquet as pq
import torch
from conftest import REPO

from initbench.core import provenance
from initbench.method.registry import get_method
from initbench.run import execution
from initbench.run.harness import run_one


def _git(folder, *args):
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True).stdout


def _repo(tmp_path):
    root = tmp_path / "checkout"
    (root / "initbench").mkdir(parents=True)
    (root / "initbench" / "__init__.py").write_text("x = 1\n")
    (root / ".gitignore").write_text(".venv/\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return root


def test_git_identity_follows_commit_edits_and_untracked_files(tmp_path):
    root = _repo(tmp_path)
    dirs = {"initbench": root / "initbench"}
    head = _git(root, "rev-parse", "HEAD").strip()
    assert provenance.git_identity(dirs) == (head, False)
    (root / "initbench" / "new.py").write_text("y = 2\n")  # untracked code counts
    assert provenance.git_identity(dirs) == (head, True)
    (root / "initbench" / "new.py").unlink()
    (root / "initbench" / "__init__.py").write_text("x = 2\n")
    assert provenance.git_identity(dirs) == (head, True)
    # an installed copy inside the checkout's ignored .venv borrows nothing from it
    wheel = root / ".venv" / "site-packages" / "initbench"
    wheel.mkdir(parents=True)
    (wheel / "__init__.py").write_text("x = 1\n")
    assert provenance.git_identity({"initbench": wheel}) == (None, None)


def test_source_hash_names_files_by_package_not_by_location(tmp_path):
    for where in ("editable/initbench", "site/initbench"):
        (tmp_path / where / "sub").mkdir(parents=True)
        (tmp_path / where / "__init__.py").write_text("x = 1\n")
        (tmp_path / where / "sub" / "a.yaml").write_text("a: 1\n")
        (tmp_path / where / "notes.txt").write_text(where)  # not a source
    editable = provenance.source_hash({"initbench": tmp_path / "editable/initbench"})
    assert editable == provenance.source_hash({"initbench": tmp_path / "site/initbench"})
    assert len(editable) == 16
    (tmp_path / "site/initbench/sub/a.yaml").write_text("a: 2\n")
    assert editable != provenance.source_hash({"initbench": tmp_path / "site/initbench"})


def test_every_row_records_the_code_threads_and_cpu(smoke_suite, tmp_path):
    outcome = run_one(smoke_suite, get_method("lora"), smoke_suite.tasks[0], 0, tmp_path)
    row = pq.read_table(outcome.path).to_pylist()[0]
    assert row["code_commit"] == _git(REPO, "rev-parse", "HEAD").strip()
    changed = _git(REPO, "status", "--porcelain", "--", "initbench", "baselines", "tasks", "pyproject.toml")
    assert row["code_dirty"] is bool(changed.strip()) and len(row["code_hash"]) == 16
    assert row["torch_threads"] == torch.get_num_threads()
    assert row["cpu_model"] and row["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(row["cpu_flags"].split(",")) <= set(provenance.KERNEL_FLAGS)
    assert json.loads(row["execution"])["compile"] is False


def test_differences_name_what_changed_and_skip_what_an_old_row_lacks():
    old = {
        "code_commit": "a" * 40,
        "cpu_flags": "avx2,avx512f",
        "torch_threads": 2,
        "peft_version": "0.17.0",
        "execution": json.dumps({"autocast": None, "loss": "full-logits"}),
    }
    new = {
        **old,
        "code_commit": "b" * 40,
        "torch_threads": 1,
        "cpu_capability": "AVX512",
        "execution": json.dumps({"autocast": "bf16", "loss": "full-logits", "compile": False}),
    }
    found = provenance.differences(old, new)
    assert [line.split(":")[0] for line in found] == ["code_commit", "torch_threads", "execution.autocast"]
    assert provenance.differences(old, dict(old)) == []
    assert execution.execution_environment(new) == {
        "INITBENCH_PRECISION": "bf16-autocast",
        "INITBENCH_COMPILE": "0",
        "INITBENCH_FAST": "0",
        "INITBENCH_THREADS": "1",
    }
