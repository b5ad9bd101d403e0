"""Preflight: what can be checked about a suite before any compute is spent.

``initbench check SUITE`` runs it, and ``evaluate`` / ``sweep`` run it before their first
run, so a bad suite fails in seconds with exit 2 and a line naming the file and the key,
not after training (or as one failed row per run).  ``load_suite`` has already checked the
schema and every value that needs nothing but the file (types, ranges, names, the trust
model); the checks here need the environment:

- the schedule: ``transformers.get_scheduler`` accepts its name with the suite's steps;
- each task: its lm-eval task YAML exists (in a trusted folder: ``tasks/lm_eval``, the suite's
  ``lm_eval_include_path`` folder, ``$INITBENCH_LM_EVAL_PATH``), lm-eval reads it (``include:``
  and ``!function`` resolve) and it declares its own name, its generator imports and takes the
  suite's ``args``, its ``files`` exist;
- the model's architecture, from its config on the meta device (no weights): the tiny
  model's shape is consistent (known keys, hidden size divisible by the heads), every
  ``lora.target_modules`` entry matches a module LoRA can wrap, and ``lora.rank`` is not
  above the smaller dimension of any targeted weight;
- ``eval.chat_template: true``: the model's tokenizer has a chat template.

A check is a function ``(suite, tasks, note) -> problems``: each problem a one-line
message ``<file>: key '<key>': ...``; ``note`` prints something worth knowing that is not
an error.  ``CHECKS`` lists them in order; another check plugs in with one line there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING

from initbench.spec.suite import Suite, SuiteError, TaskSpec

if TYPE_CHECKING:  # torch and transformers load lazily: `initbench check` imports them only when it runs
    import torch
    from transformers import PretrainedConfig

Note = Callable[[str], None]
Check = Callable[[Suite, list[TaskSpec], Note], list[str]]


def check_suite(suite: Suite, tasks: list[TaskSpec] | None = None, note: Note = lambda line: None) -> list[str]:
    """Every problem ``CHECKS`` find in ``suite`` (restricted to ``tasks`` when given)."""
    tasks = suite.tasks if tasks is None else tasks
    problems: list[str] = []
    for check in CHECKS:
        problems += check(suite, tasks, note)
    return problems


def check_schedule(suite: Suite, tasks: list[TaskSpec], note: Note) -> list[str]:
    """The schedule builds exactly as the training loop builds it (``initbench.run.train``)."""
    import torch
    from transformers import get_scheduler

    budget = suite.budget
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=budget.optimizer.lr)
    try:
        schedule = get_scheduler(
            budget.schedule.name,
            optimizer,
            num_training_steps=budget.steps,
            num_warmup_steps=int(budget.schedule.warmup_ratio * budget.steps),
        )
        optimizer.step()
        schedule.step()  # as the loop calls it, with no metric (reduce_lr_on_plateau needs one)
    except Exception as err:  # an unknown name (ValueError), or one that needs arguments the loop does not pass
        return [
            f"{suite.path}: key 'budget.schedule.name': {budget.schedule.name!r} is not a schedule the training "
            f"loop can build ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); use "
            "linear, cosine, constant or constant_with_warmup"
        ]
    return []


def check_tasks(suite: Suite, tasks: list[TaskSpec], note: Note) -> list[str]:
    """Each task's lm-eval YAML, generator (imported, not called) and data files."""
    from initbench.inputs.data import data_file, load_generator
    from initbench.inputs.evaluation import load_task_yaml
    from initbench.spec.trust import suite_lm_eval_dir

    own = suite_lm_eval_dir(suite)  # trusted: load_suite has checked it
    if own is not None and not own.is_dir():
        return [
            f"{suite.path}: key 'lm_eval_include_path' ({suite.lm_eval_include_path!r}): no folder at {own} "
            "(a relative path is read from the suite file's folder)"
        ]
    problems = []
    for task in tasks:
        key = f"tasks[{suite.tasks.index(task)}]"
        try:
            load_task_yaml(task.lm_eval_task, own)  # found in a trusted folder, readable by lm-eval, task: its name
        except SuiteError as err:
            problems.append(f"{suite.path}: key '{key}.lm_eval_task': {err}")
        if task.data.generator:
            try:
                function = load_generator(task, suite.path, f"{key}.data.generator")
            except SuiteError as err:
                problems.append(str(err))
            else:
                try:
                    inspect.signature(function).bind(**task.data.args)
                except TypeError as err:
                    problems.append(f"{suite.path}: key '{key}.data.args' does not fit {task.data.generator}: {err}")
                except ValueError:  # no signature to inspect (a builtin): the call will tell
                    pass
        for split in ("train", "test"):
            if task.data.files and split not in task.data.files:
                problems.append(f"{suite.path}: key '{key}.data.files' must name a {split!r} file")
        for split, path in task.data.files.items():
            resolved = data_file(path, suite.path)
            if not resolved.is_file():
                problems.append(
                    f"{suite.path}: key '{key}.data.files.{split}': no file at {resolved} "
                    f"(relative paths are read from the suite file's folder)"
                )
    return problems


def check_model(suite: Suite, tasks: list[TaskSpec], note: Note) -> list[str]:
    """The tiny shape, then the targets and rank against the architecture (meta device)."""
    from initbench.inputs.models import ModelError, model_config

    problems = _tiny_shape(suite) if suite.model.source == "tiny" else []
    if problems:
        return problems
    try:
        config = model_config(suite.model)
    except ModelError as err:
        if suite.model.source == "hub":  # not in the local cache yet: the first run downloads it
            note(
                f"initbench: {suite.path}: key 'model.id': {err}; target_modules and rank are checked "
                "when the model is loaded"
            )
            return []
        return [f"{suite.path}: key 'model.id': {err}"]
    return _targets(suite, _meta_model(config))


def _tiny_shape(suite: Suite) -> list[str]:
    from initbench.inputs.models import TINY_DEFAULTS

    where, shape = suite.path, {**TINY_DEFAULTS, **suite.model.tiny}
    unknown = sorted(set(suite.model.tiny) - set(TINY_DEFAULTS))
    if unknown:
        return [f"{where}: unknown key 'model.tiny.{unknown[0]}' (expected one of {sorted(TINY_DEFAULTS)})"]
    small = [k for k, v in shape.items() if k != "init_seed" and v <= 0]
    if small:
        return [f"{where}: key 'model.tiny.{small[0]}' must be positive, got {shape[small[0]]}"]
    hidden, heads, kv = shape["hidden_size"], shape["num_attention_heads"], shape["num_key_value_heads"]
    if hidden % heads:
        return [
            f"{where}: key 'model.tiny.hidden_size' ({hidden}) must be divisible by "
            f"'model.tiny.num_attention_heads' ({heads})"
        ]
    if heads % kv:
        return [
            f"{where}: key 'model.tiny.num_attention_heads' ({heads}) must be divisible by "
            f"'model.tiny.num_key_value_heads' ({kv})"
        ]
    return []


def _meta_model(config: PretrainedConfig) -> torch.nn.Module:
    """The architecture without weights: instantiated on the meta device (milliseconds)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _targets(suite: Suite, model: torch.nn.Module) -> list[str]:
    """Every target matches a module LoRA wraps (peft's rule for a list: the name, or a suffix
    after a dot), and the rank is at most the smaller dimension of every targeted weight."""
    import torch
    from transformers.pytorch_utils import Conv1D

    wrappable = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, Conv1D)
    modules = dict(model.named_modules())
    problems, usable_all = [], {}
    for i, target in enumerate(suite.lora.target_modules):
        matched = {n: m for n, m in modules.items() if n == target or n.endswith("." + target)}
        usable = {n: m for n, m in matched.items() if isinstance(m, wrappable)}
        key = f"{suite.path}: key 'lora.target_modules[{i}]'"
        if not matched:
            leaves = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if isinstance(m, wrappable)})
            problems.append(f"{key}: {target!r} matches no module of the model (its layers: {', '.join(leaves)})")
            continue
        if not usable:
            name, module = next(iter(matched.items()))
            problems.append(
                f"{key}: {target!r} matches {name} ({type(module).__name__}), which LoRA cannot wrap; "
                "target Linear, Embedding or Conv layers"
            )
            continue
        usable_all.update(usable)
    if usable_all:
        name, module = min(usable_all.items(), key=lambda item: min(item[1].weight.shape[:2]))
        smallest, rank = min(module.weight.shape[:2]), suite.lora.rank
        if rank > smallest:
            problems.append(
                f"{suite.path}: key 'lora.rank' ({rank}) is above the smaller dimension ({smallest}) of "
                f"targeted {name} (weight {tuple(module.weight.shape)}); use a rank of at most {smallest}"
            )
    return problems


def check_chat_template(suite: Suite, tasks: list[TaskSpec], note: Note) -> list[str]:
    """``eval.chat_template: true`` needs a tokenizer with a chat template (read without the weights;
    one that cannot be read yet is checked when the model loads)."""
    from initbench.inputs.models import ModelError, chat_template

    if not suite.eval.chat_template:
        return []
    try:
        template = chat_template(suite.model)
    except ModelError as err:
        note(f"initbench: {suite.path}: key 'eval.chat_template': {err}; checked when the model is loaded")
        return []
    if template:
        return []
    return [
        f"{suite.path}: key 'eval.chat_template' is true, but the {suite.model.source} model's tokenizer has no "
        "chat template; set eval.chat_template: false (or leave it out)"
    ]


# The preflight, in order.  Plug another check in with one line here: a function
# (suite, tasks, note) -> list of "<file>: key '<key>': ..." problems (e.g. the
# contamination report of the tasks' training and test splits).
CHECKS: list[Check] = [
    check_schedule,
    check_tasks,
    check_model,
    check_chat_template,
]
