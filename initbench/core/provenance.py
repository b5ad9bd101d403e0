"""Code identity: which code, on which CPU, in which mode produced a result row (schema v6).

A row records (``columns``):

- ``code_commit`` / ``code_dirty``: the git commit of the checkout initbench is imported from and
  whether its code (``initbench/``, ``baselines/``, ``tasks/``, ``pyproject.toml``) differs from
  it, tracked or untracked; null when initbench does not run from a git checkout (a wheel).  The
  package must be *tracked* in that checkout, so a wheel inside some repository's ``.venv`` does not
  borrow the repository's commit.
- ``code_hash``: SHA-256 (16 hex) of the installed sources of ``initbench``, ``initbench_baselines``
  and ``initbench_tasks`` (``.py``, ``.yaml``, ``.json``), each file named relative to its package,
  so an editable install and a wheel of the same sources agree; always recorded, dirty or not.
- ``torch_threads``: torch's intra-op thread count.
- ``cpu_model``, ``cpu_flags`` (the instruction-set flags that choose kernels, from
  ``/proc/cpuinfo``) and ``cpu_capability`` (``torch.backends.cpu.get_cpu_capability()``: the
  kernel set torch dispatched to, e.g. ``AVX512``).

The execution mode (precision, compile, loss path) is the ``execution`` column
(``initbench.run.execution.execution_settings``; ``initbench.run.execution.rerun_environment`` sets it again
for a rerun).  :func:`differences` names which of all these differ
between a published row and its reproduction, for ``initbench reproduce``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

#: instruction-set flags that choose CPU kernels (x86 from ``flags``, Arm from ``Features``)
KERNEL_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
    "asimd",
    "asimdhp",
    "asimddp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
    "sme",
)
PACKAGES = ("initbench", "initbench_baselines", "initbench_tasks")
SOURCE_SUFFIXES = (".py", ".yaml", ".yml", ".json")
#: the columns that name the CPU whose kernels computed a row: bf16 and float32 kernels (oneDNN, MKL)
#: differ between CPUs, so only a rerun on the same CPU identity can match a value bit for bit
CPU_COLUMNS = ("cpu_model", "cpu_flags", "cpu_capability")
#: the v6 columns this module fills, in schema order
COLUMNS = ("code_commit", "code_dirty", "code_hash", "torch_threads", *CPU_COLUMNS)
#: columns compared by :func:`differences` beside ``COLUMNS`` (versions, device, execution mode)
COMPARED = COLUMNS + (
    "initbench_version",
    "torch_version",
    "transformers_version",
    "peft_version",
    "lm_eval_version",
    "python_version",
    "device",
    "determinism",
    "data_hash",
)


def columns() -> dict[str, Any]:
    """The provenance columns of a row made now, by this process."""
    return {**code_identity(), "torch_threads": torch.get_num_threads(), **cpu_identity()}


@functools.cache
def package_dirs() -> dict[str, Path]:
    """The folder each of initbench's packages is imported from."""
    dirs = {}
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs[name] = Path(next(iter(spec.submodule_search_locations))).resolve()
    return dirs


def source_hash(dirs: dict[str, Path]) -> str:
    """SHA-256 (16 hex) over every source file of the packages, named ``<package>/<relative path>``."""
    digest = hashlib.sha256()
    for name in sorted(dirs):
        files = sorted(
            p
            for p in dirs[name].rglob("*")
            if p.suffix in SOURCE_SUFFIXES and p.is_file() and "__pycache__" not in p.parts
        )
        for path in files:
            digest.update(f"{name}/{path.relative_to(dirs[name]).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_identity(dirs: dict[str, Path]) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout that tracks the ``initbench`` package, or (None, None)."""
    package = dirs.get("initbench")
    if package is None or _git(package, "ls-files", "--error-unmatch", "__init__.py") is None:
        return None, None
    top, commit = _git(package, "rev-parse", "--show-toplevel"), _git(package, "rev-parse", "HEAD")
    if not top or not commit:
        return None, None
    root = Path(top.strip())
    paths = [str(d.relative_to(root)) for d in dirs.values() if d.is_relative_to(root)] + ["pyproject.toml"]
    status = _git(root, "status", "--porcelain", "--", *paths)
    return commit.strip(), None if status is None else bool(status.strip())


@functools.cache
def code_identity() -> dict[str, Any]:
    """``code_commit``, ``code_dirty`` and ``code_hash`` of the code this process runs (computed once)."""
    dirs = package_dirs()
    commit, dirty = git_identity(dirs)
    return {"code_commit": commit, "code_dirty": dirty, "code_hash": source_hash(dirs)}


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


@functools.cache
def cpu_identity() -> dict[str, str]:
    """``cpu_model``, ``cpu_flags`` (the kernel-choosing ones present, in ``KERNEL_FLAGS`` order) and
    ``cpu_capability`` (torch's dispatch level)."""
    info = _cpuinfo()
    present = set((info.get("flags") or info.get("Features") or "").split())
    model = info.get("model name") or info.get("Model name") or platform.processor() or platform.machine()
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # torch < 2.1
        capability = ""
    return {
        "cpu_model": model,
        "cpu_flags": ",".join(f for f in KERNEL_FLAGS if f in present),
        "cpu_capability": capability,
    }


def same_cpu(row: dict[str, Any]) -> bool:
    """Whether ``row`` was computed on a CPU of this machine's identity (model, kernel flags, torch's
    dispatch level); a row without them (an older schema) is not."""
    here = cpu_identity()
    return all(row.get(name) is not None and row.get(name) == here[name] for name in CPU_COLUMNS)


def differences(published: dict[str, Any], reproduced: dict[str, Any]) -> list[str]:
    """What differs between two rows' code identity, versions, device and execution mode, as
    ``name: published -> reproduced`` (``execution.<key>`` for the execution JSON); columns one of
    the rows lacks (an older schema) are not compared."""
    found = []
    for name in COMPARED:
        if (
            name in published
            and name in reproduced
            and published[name] is not None
            and published[name] != reproduced[name]
        ):
            found.append(f"{name}: {published[name]!r} -> {reproduced[name]!r}")
    old, new = json_object(published.get("execution")), json_object(reproduced.get("execution"))
    for key in sorted(set(old) & set(new)):
        if old[key] != new[key]:
            found.append(f"execution.{key}: {old[key]!r} -> {new[key]!r}")
    return found


def json_object(text: Any) -> dict[str, Any]:
    """The JSON object in ``text`` (a row's ``execution`` column); empty when it is not one."""
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def explain(published: dict[str, Any], reproduced: dict[str, Any]) -> str:
    """One line for ``reproduce`` when values differ: what of the code identity differs."""
    found = differences(published, reproduced)
    return ("differs in " + "; ".join(found)) if found else "same recorded code identity, versions and mode"
