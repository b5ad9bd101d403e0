"""The harness: one run is (suite, method, task, seed) -> seeded LoRA attach, init,
budgeted training, lm-eval, Arrow rows on disk.

``run_one`` never raises for a failure inside a run: a method that raises, a
loss that diverges or an evaluation error becomes that run's status, written
like any result, so one broken method cannot take the others' results down.
Every hook of the method is called through ``call_hook``, so an error raised in
one names the method, where its class lives and the hook (``MethodFailure``);
``INITBENCH_DEBUG=1`` prints each failed run's traceback to stderr.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from initbench import claims
from initbench import data as task_data
from initbench import diagnostics, execution, forgetting, provenance, samples
from initbench.api import InitContext, InitMethod, LoraSettings
from initbench.budget import Budget, BudgetMismatch, Spend
from initbench.calibration import Calibrator
from initbench.datasets_io import DataUnavailable
from initbench.evaluation import evaluate, task_primary_metric
from initbench.init_cache import InitReuse, WatchedContext, cache_key
from initbench.models import LoadedModel, load_model
from initbench.results import DONE, finished_status, format_lr, run_stem, write_run
from initbench.seeding import configure_determinism, pick_device, seed_everything
from initbench.suite import LoraSpec, Suite, TaskSpec
from initbench.throughput import training_throughput
from initbench.train import train
from initbench.train_cache import TrainReuse


@dataclass
class RunOutcome:
    method: str
    task: str
    seed: int
    status: str  # ok | diverged | failed | skipped | claimed (another process is computing it)
    path: Path | None = None
    error: str = ""
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class _HeldModel:
    key: str  # the suite's model spec and the device
    loaded: LoadedModel
    prints: dict[str, tuple[float, float]]  # every parameter and buffer, as loaded


_BASE_MODELS: dict[str, _HeldModel] = {}  # pristine models waiting for a run
_LENT: dict[int, _HeldModel] = {}  # models a run holds, by id of the model


def model_key(suite: Suite, device: torch.device) -> str:
    """What identifies a loaded base model in this process: the suite's model spec and the device."""
    return json.dumps([suite.model.__dict__, str(device)], sort_keys=True, default=str)


def base_model(suite: Suite, device: torch.device) -> LoadedModel:
    """The suite's base model for one run, lent until :func:`return_base_model`.

    Loaded once per process and never copied (a copy would double the memory a run needs): a
    run borrows the one model, and when it gives it back the model is kept for the next run only
    if it is pristine again -- adapters unloaded, every parameter and buffer equal to what was
    loaded, nothing left trainable.  Otherwise (PiSSA's residual, full fine-tuning) it is
    dropped and the next run loads it again (from initbench's cache for the embedded default)."""
    key = model_key(suite, device)
    held = _BASE_MODELS.pop(key, None)
    if held is None:
        loaded = load_model(suite.model, device)
        held = _HeldModel(key, loaded, state_fingerprints(loaded.model))
    _LENT[id(held.loaded.model)] = held
    return held.loaded


def return_base_model(loaded: LoadedModel, model: torch.nn.Module | None) -> bool:
    """Give back the model :func:`base_model` lent (``model``: what the run made of it, e.g. the
    peft-wrapped one); returns whether it was pristine and is kept for the next run."""
    held = _LENT.pop(id(loaded.model), None)
    if held is None:
        return False
    if model is not loaded.model:
        unload = getattr(model, "unload", None)
        try:
            model = unload() if unload is not None else model
        except Exception:  # an adapter peft cannot take off: not reusable
            return False
    if model is not loaded.model or any(p.requires_grad for p in model.parameters()):
        return False
    model.eval()
    if state_fingerprints(model) != held.prints:
        return False
    _BASE_MODELS[held.key] = held
    return True


def state_fingerprints(model: torch.nn.Module) -> dict[str, tuple[float, float]]:
    """Sum (accumulated in float64) and sum of squares of every parameter and buffer, by name."""
    return {name: _fingerprint(t) for name, t in model.state_dict(keep_vars=True).items()}


def _fingerprint(tensor: torch.Tensor, chunk: int = 1 << 22) -> tuple[float, float]:
    """(sum accumulated in float64, dot product with itself).  The float64 sum casts its input, so it
    runs in chunks (temporaries of at most 32 MB; the embedding alone is 113 MB); the dot needs none."""
    flat = tensor.detach().reshape(-1)
    if not flat.is_floating_point():
        flat = flat.double()
    total = sum(float(torch.sum(part, dtype=torch.float64)) for part in flat.split(chunk))
    return total, float(torch.dot(flat, flat))


def lora_settings(spec: LoraSpec, method: InitMethod, family: str = "") -> LoraSettings:
    """The suite's LoRA settings with the method's scaling convention (alpha, rsLoRA; for the
    suite's task ``family``) unless the suite pins them (``lora.pin_alpha``)."""
    alpha, use_rslora = spec.alpha, spec.use_rslora
    if not spec.pin_alpha:
        paper_alpha = call_hook(method, "paper_alpha", spec.rank, family)
        alpha = alpha if paper_alpha is None else float(paper_alpha)
        use_rslora = use_rslora if method.use_rslora is None else method.use_rslora
    return LoraSettings(spec.rank, alpha, tuple(spec.target_modules), spec.dropout, use_rslora)


def _run_lora(suite: Suite, method: InitMethod) -> tuple[LoraSettings, MethodFailure | None]:
    """The run's LoRA settings; when the method's alpha convention (``paper_alpha``) raises, the suite's
    own settings and that failure, so the run is recorded as failed rather than take its caller down."""
    try:
        return lora_settings(suite.lora, method, suite.family), None
    except MethodFailure as err:
        return lora_settings(dataclasses.replace(suite.lora, pin_alpha=True), method), err


def run_one(
    suite: Suite, method: InitMethod, task: TaskSpec, seed: int, out: Path, *, force: bool = False,
    lr: float | None = None, split: str = "test", protocol: str | None = None, selected_lr: float | None = None,
    save_adapters: bool = False,
) -> RunOutcome:
    """Run (method, task, seed) of ``suite`` and write its files under ``out`` (skipped if already there
    and written on the same data: ``results.finished_status`` with the data's content hash).
    ``save_adapters`` (or the suite's ``save_adapters``) keeps a final run's trained adapter beside its
    results file (``initbench.export``).

    ``lr`` overrides the suite's learning rate and ``split`` picks what lm-eval scores
    (``validation`` for a tuning trial: trained on the training split, carved if the task has
    no validation split, see ``data.with_validation``).  Either makes the run's file stem and
    run id carry the rate and split; ``protocol`` defaults to ``fixed`` for a run at the
    suite's rate on test and ``tuned`` otherwise (``initbench.protocol``)."""
    stem = run_stem(out, suite.name, method.name, task.name, seed, suite.spec_hash, lr=lr, split=split)
    try:
        data: task_data.TaskData | Exception = task_data.run_data(task, suite.path, split)
    except Exception as err:  # unreadable now: a finished run stays, an unfinished one records why below
        data = err
    data_hash = None if isinstance(data, Exception) else data.content_hash
    if not force and finished_status(stem, data_hash) in DONE:
        return RunOutcome(method.name, task.name, seed, "skipped", stem)
    claim = claims.acquire(stem)  # never compute a run another process is computing
    if isinstance(claim, claims.Holder):
        return RunOutcome(method.name, task.name, seed, "claimed", stem, f"being computed by {claim.describe()}")
    with claim:
        if not force and finished_status(stem, data_hash) in DONE:
            return RunOutcome(method.name, task.name, seed, "skipped", stem)  # finished while we claimed it
        return _compute(suite, method, task, seed, out, stem, data, lr=lr, split=split, protocol=protocol,
                        selected_lr=selected_lr, save_adapters=save_adapters or suite.save_adapters)


def _compute(
    suite: Suite, method: InitMethod, task: TaskSpec, seed: int, out: Path, stem: Path,
    data: task_data.TaskData | Exception, *,
    lr: float | None, split: str, protocol: str | None, selected_lr: float | None, save_adapters: bool = False,
) -> RunOutcome:
    """The run itself, under its claim: attach, init, train, evaluate, [save,] write (``run_one``)."""
    wall_start = time.perf_counter()
    samples.discard(stem)  # an earlier computation's samples (this one writes its own, or none)
    execution.apply_threads()
    device = pick_device()
    determinism = configure_determinism(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    lora, lora_failure = _run_lora(suite, method)
    record = _run_metadata(suite, method, task, seed, lora, lr, split, protocol, selected_lr, device, determinism)
    lr = suite.budget.optimizer.lr if lr is None else float(lr)
    spend, curve = Spend(), []
    label = f"{method.name} | {task.name} | seed {seed}"
    loaded = model = None
    try:
        if lora_failure is not None:
            raise lora_failure
        record["primary_metric"] = task_primary_metric(task, suite.path)[0]  # a bad suite key fails before compute
        if isinstance(data, Exception):
            raise data
        record["data_hash"] = data.content_hash
        loaded = base_model(suite, device)
        record.update(model=loaded.label, model_revision=loaded.revision)
        model, tokenizer = loaded.model, loaded.tokenizer
        base_params = linear_params(model)
        record["total_params"] = sum(p.numel() for p in model.parameters())
        seed_everything(seed)

        status, scores = "ok", []
        held = _forgetting_held_set(suite, method, split, loaded, device)  # the untouched base model's side
        tracker = None
        if method.trains and method.attaches_lora and diagnostics.enabled():
            tracker = diagnostics.Tracker(diagnostics.snapshot(model, lora.target_modules))
        if method.trains:
            examples = task_data.tokenize_records(data.records("train"), tokenizer, suite.budget.max_length)
            init_start, reuse, train_reuse = time.perf_counter(), None, None
            if method.attaches_lora:
                if execution.init_reuse_enabled():
                    key = cache_key(suite.spec_hash, method, lora, seed, examples, device)
                    reuse = InitReuse.for_run(out, key, started=init_start)
                    train_reuse = TrainReuse.for_run(out, key, lr, device)
                model, modified = attach_and_initialize(
                    model, tokenizer, method, lora, seed=seed, examples=examples, budget=suite.budget, lr=lr,
                    spend=spend, base_params=base_params, device=device, family=suite.family, reuse=reuse,
                )
                if tracker is not None:
                    tracker.after_init(model)
            else:  # a full fine-tuning reference: every base parameter trains, nothing changes at init
                model.requires_grad_(True)
                modified = []
            record["init_seconds"] = time.perf_counter() - init_start if reuse is None else reuse.init_seconds
            record["init_reused"] = reuse is not None and reuse.reused
            record["base_weights_modified"], record["modified_layers"] = bool(modified), len(modified)
            record["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
            flops_before = spend.flops
            trained = None if train_reuse is None else train_reuse.restore(model, spend)
            if trained is None:
                trained = train(model, examples, suite.budget, lr=lr, seed=seed, pad_id=tokenizer.pad_token_id,
                                device=device, spend=spend, base_params=base_params, label=label,
                                optimizer=call_hook(method, "build_optimizer", model, lr, suite.budget.optimizer))
                if train_reuse is not None:
                    train_reuse.store(model, trained, spend)
            record["train_reused"] = train_reuse is not None and train_reuse.reused
            status, curve = trained.status, trained.curve
            spent = suite.budget.spent_problems(spend.optimizer_steps, spend.train_tokens, spend.calibration_examples,
                                                status=status)
            if spent:  # never publish a run that spent other than its budget
                raise BudgetMismatch(f"the run spent other than its budget: {'; '.join(spent)}")
            record["train_seconds"] = trained.seconds
            record["execution"] = json.dumps(trained.execution, sort_keys=True)
            record.update(training_throughput(spend.flops - flops_before, spend.train_tokens, trained.seconds,
                                              device.type, record["device_name"]))
            record["final_train_loss"] = curve[-1]["loss"] if curve else None
            if tracker is not None:
                record.update(tracker.summary(model))
        else:
            record.update(trainable_params=0, base_weights_modified=False, modified_layers=0, init_seconds=0.0)
        if status == "ok" and held is not None:
            record["forgetting_kl"], record["forgetting_set"] = forgetting.mean_token_kl(model, held), held.name
        if status == "ok":
            scores, record["eval_seconds"] = evaluate(
                model, tokenizer, task.lm_eval_task, data, batch_size=suite.eval.batch_size,
                limit=suite.eval.limit, seed=seed, split=split, chat_template=suite.eval.chat_template,
                keep_samples=samples.sink(stem, record["run_id"], split),
            )
        if status == "ok" and save_adapters and split == "test" and method.trains:
            _save_trained(stem, suite, loaded, model, examples, record, scores, label)
    except Exception as err:  # recorded as this run's failure; the sweep goes on
        status, scores = "failed", []
        record["error"] = _describe(err)
        if debug_enabled():
            print(f"initbench: {label} failed; traceback ({DEBUG_ENV}=1):", file=sys.stderr)
            traceback.print_exception(err, file=sys.stderr)
    if loaded is not None:
        return_base_model(loaded, model)
    record.update(spend.columns())
    record["peak_memory_bytes"] = _peak_memory(device)
    record["wall_seconds"] = time.perf_counter() - wall_start
    record["status"] = status
    rows = [{**record, "metric": s.metric, "value": s.value, "stderr": s.stderr} for s in scores] or [record]
    keys = {k: record[k] for k in ("run_id", "suite", "suite_hash", "method", "task", "seed")}
    path = write_run(stem, rows, [{**keys, **point} for point in curve])
    return RunOutcome(method.name, task.name, seed, status, path, record.get("error", ""),
                      {s.metric: s.value for s in scores})


def _save_trained(stem: Path, suite: Suite, loaded: LoadedModel, model: torch.nn.Module,
                  examples: list[dict[str, list[int]]], record: dict[str, Any], scores: list, label: str) -> None:
    """Keep a final run's trained model beside its results file as a plain adapter on the original base
    (``initbench.export``), checked on a probe of its first training examples; say where and how big."""
    from initbench import export

    device = next(model.parameters()).device
    probe = task_data.collate(examples[:4], loaded.tokenizer.pad_token_id)
    probe = {key: probe[key].to(device) for key in ("input_ids", "attention_mask")}
    run = {key: record.get(key) for key in export.RUN_KEYS}
    run.update(suite_path=str(Path(suite.path).resolve()), scores={s.metric: s.value for s in scores})
    folder = export.saved_folder(stem)
    saved = export.save_trained(folder, model, loaded.tokenizer, lambda: pristine_base(suite, loaded), probe, run)
    print(f"initbench: {label}: {export.describe(saved['export'])} saved to {folder}", file=sys.stderr)


def pristine_base(suite: Suite, loaded: LoadedModel) -> torch.nn.Module:
    """The base model lent as ``loaded`` loaded once more, on its device, and checked against the prints
    taken when it was first loaded: the original weights an export is relative to, whatever the run did
    to the lent one (PiSSA's residual, LoftQ's quantized base)."""
    held = _LENT.get(id(loaded.model))
    fresh = load_model(suite.model, next(loaded.model.parameters()).device).model
    if held is None or state_fingerprints(fresh) != held.prints:
        raise RuntimeError("the base model loaded again differs from the one this run borrowed (a changed model "
                           "cache?); its adapter cannot be exported against it")
    return fresh


def _forgetting_held_set(suite: Suite, method: InitMethod, split: str, loaded: LoadedModel,
                         device: torch.device) -> forgetting.HeldSet | None:
    """The held set for forgetting (``initbench.forgetting``), taken from the base model as loaded, for a
    final run of a method that trains; None for trials and ``base``, and when the held text cannot be
    read here: the run goes on and its forgetting is null.  The hub is asked only by suites whose model
    comes from the hub (online users); an offline suite (embedded or tiny model) without a data
    directory skips it rather than wait for the hub to time out."""
    if split != "test" or not method.trains:
        return None
    from initbench.datasets_io import data_dir

    if data_dir()[0] is None and suite.model.source != "hub":  # an offline suite: never wait on the hub
        _warn_once("forgetting not measured: no data directory; pass --data-dir (or set INITBENCH_DATA_DIR) "
                   "to a folder holding nq_open/NQ-open.dev.jsonl")
        return None
    key = model_key(suite, device)
    try:
        return forgetting.base_held_set(key, loaded.model, loaded.tokenizer)
    except DataUnavailable as err:
        _warn_once(f"forgetting not measured: {err}")
        return None


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"initbench: {message}", file=sys.stderr)


def record_crash(
    suite: Suite, method: InitMethod, task: TaskSpec, seed: int, out: Path, reason: str, *,
    lr: float | None = None, split: str = "test", protocol: str | None = None, selected_lr: float | None = None,
) -> Path:
    """Write a ``failed`` result for a run whose process died before it could write one itself
    (killed, out of memory, a segfault): what an executor calls, so the grid shows the failure
    and its reason, and a rerun redoes just that run."""
    lora, _ = _run_lora(suite, method)
    record = _run_metadata(suite, method, task, seed, lora, lr, split, protocol, selected_lr, pick_device(), {})
    record.update(Spend().columns(), status="failed", error=reason)
    stem = run_stem(out, suite.name, method.name, task.name, seed, suite.spec_hash, lr=lr, split=split)
    samples.discard(stem)  # written before the process died, of a run recorded as failed
    return write_run(stem, [record], [])


def _run_metadata(
    suite: Suite, method: InitMethod, task: TaskSpec, seed: int, lora: LoraSettings, lr: float | None, split: str,
    protocol: str | None, selected_lr: float | None, device: torch.device, determinism: dict[str, object],
) -> dict[str, Any]:
    """What identifies a run and what is needed to rerun it: the columns known before it starts.

    ``lr`` None is the suite's rate; a rate other than that or a split other than ``test`` tags
    the run id (and file stem); ``protocol`` defaults to ``fixed`` for an untagged run, else ``tuned``."""
    if split not in ("test", "validation"):
        raise ValueError(f"split must be 'test' or 'validation', got {split!r}")
    tag = "" if lr is None and split == "test" else f"/lr{format_lr(lr)}/{split}"
    lr = suite.budget.optimizer.lr if lr is None else float(lr)
    return {
        "run_id": f"{suite.name}/{method.name}/{task.name}/seed{seed}/{suite.spec_hash}{tag}",
        "suite": suite.name,
        "suite_hash": suite.spec_hash,
        "method": method.name,
        "task": task.name,
        "seed": seed,
        "config_hash": _config_hash(suite, method, task, seed, lora, lr, split),
        "method_version": method.version,
        "method_package": _method_package(method),
        "is_reference": method.is_reference,
        "lm_eval_task": task.lm_eval_task,
        "dtype": suite.model.dtype,
        "lora_rank": lora.rank if method.attaches_lora and method.trains else None,
        "lora_alpha": lora.alpha if method.attaches_lora and method.trains else None,
        "lora_scale": lora.scale if method.attaches_lora and method.trains else None,
        "use_rslora": lora.use_rslora,
        "target_modules": ",".join(lora.target_modules),
        "learning_rate": lr if method.trains else None,
        "eval_batch_size": suite.eval.batch_size,
        "eval_limit": suite.eval.limit,
        "device": device.type,
        "device_name": _device_name(device),
        "determinism": json.dumps(determinism, sort_keys=True),
        "execution": json.dumps(execution.execution_settings(device), sort_keys=True),
        "start_time": datetime.now(timezone.utc),
        **_versions(),
        **provenance.columns(),
        "protocol": protocol or ("tuned" if tag else "fixed"),
        "phase": "final" if split == "test" else "trial",
        "eval_split": split,
        "selected_lr": selected_lr,
    }


def attach_and_initialize(
    model: torch.nn.Module,
    tokenizer,
    method: InitMethod,
    lora: LoraSettings,
    *,
    seed: int,
    examples: list[dict[str, list[int]]],
    budget: Budget,
    lr: float,
    spend: Spend,
    base_params: int,
    device: torch.device,
    family: str = "",
    reuse: InitReuse | None = None,
) -> tuple[torch.nn.Module, list[str]]:
    """Attach LoRA with peft (seeded), run the method's init; returns the peft model and the base
    layers whose frozen weight changed (compared by fingerprint, so peft-side changes count too).
    ``budget``, ``lr`` and ``family`` (the suite's budget, the run's learning rate, the suite's task
    family) reach the method as ``ctx.budget``, ``ctx.lr`` and ``ctx.family``.  The calibration
    allowance is min(the method's reference amount, the suite's); both are recorded in
    ``spend.method_info`` with whatever the method put in ``ctx.info``.  With ``reuse``
    (``initbench.init_cache``) a stored init of the same key replaces ``initialize`` (peft's
    attach-time init still runs), and a trial's is stored."""
    held = _LENT.get(id(model))
    if held is not None:  # a lent base model: its prints as loaded are known, no pass needed
        before = {key: held.prints[f"{key}.weight"] for key, _ in _targeted_linears(model, lora.target_modules)}
    else:
        before = _fingerprints(model, lora.target_modules)
    model = attach_lora(model, method, lora, seed)
    if reuse is not None:
        restored = reuse.restore(model, spend)
        if restored is not None:
            return model, restored
        reuse.watch(model, method)
    ctx = init_context(model, tokenizer, method, lora, seed=seed, examples=examples, budget=budget, lr=lr,
                       spend=spend, base_params=base_params, device=device, family=family,
                       context_class=InitContext if reuse is None else WatchedContext)
    call_hook(method, "initialize", model, ctx)
    reference = call_hook(method, "reference_calibration_examples", family)
    if reference is not None or spend.calibration_examples:
        spend.method_info.update(calibration_reference_examples=reference,
                                 calibration_granted_examples=ctx.calibration.allowance.examples)
    spend.method_info.update(ctx.info)
    after = _fingerprints(model.get_base_model(), lora.target_modules)
    modified = sorted(name for name in before if before[name] != after.get(name))
    if reuse is not None:
        reuse.store(model, method, ctx, spend, modified, None if held is None else held.prints)
    return model, modified


def attach_lora(model: torch.nn.Module, method: InitMethod, lora: LoraSettings, seed: int) -> torch.nn.Module:
    """The peft model of ``model`` with the run's LoRA attached, peft's own init seeded by ``seed``
    (``lora_config_kwargs`` of the method: its ``init_lora_weights``, ...)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, target_modules=list(lora.target_modules), lora_dropout=lora.dropout,
        use_rslora=lora.use_rslora, task_type="CAUSAL_LM", **call_hook(method, "lora_config_kwargs", lora),
    )
    torch.manual_seed(seed)
    return get_peft_model(model, config)


def init_context(
    model: torch.nn.Module, tokenizer, method: InitMethod, lora: LoraSettings, *, seed: int,
    examples: list[dict[str, list[int]]], budget: Budget, lr: float, spend: Spend, base_params: int,
    device: torch.device, family: str = "", context_class: type[InitContext] = InitContext,
) -> InitContext:
    """The ``InitContext`` the harness hands ``initialize``: its calibrator over ``examples`` grants
    min(the method's reference amount, the suite's allowance) and charges ``spend``."""
    granted = budget.granted_calibration(call_hook(method, "reference_calibration_examples", family))
    calibrator = Calibrator(model, examples, granted, spend, base_params, seed, tokenizer.pad_token_id, device,
                            tokenizer=tokenizer, max_length=budget.max_length)
    return context_class(model, lora, seed, calibrator, tokenizer, budget=budget, lr=lr, family=family)


class MethodFailure(RuntimeError):
    """The init method itself raised (as opposed to the harness); the method's exception is ``__cause__``."""


def call_hook(method: InitMethod, hook: str, *args: Any) -> Any:
    """``method.<hook>(*args)``; an exception raised there (a wrong signature included) becomes a
    ``MethodFailure`` that names the method, where its class is defined and the hook, so it does not
    read like an initbench bug: ``method 'my-init' (my_pkg.init:MyInit 0.1.0) raised in initialize: ...``."""
    try:
        return getattr(method, hook)(*args)
    except Exception as err:
        cls = type(method)
        where = f"{cls.__module__}:{cls.__qualname__}" + (f" {method.version}" if method.version else "")
        message = f"method {method.name!r} ({where}) raised in {hook}: {type(err).__name__}: {err}"
        raise MethodFailure(message) from err


DEBUG_ENV = "INITBENCH_DEBUG"


def debug_enabled() -> bool:
    """Whether ``INITBENCH_DEBUG`` asks for the traceback of every failed run on stderr."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _targeted_linears(model: torch.nn.Module, targets: tuple[str, ...]):
    """(name without peft's ``.base_layer``, module) of every targeted linear layer."""
    for name, module in model.named_modules():
        key = name.removesuffix(".base_layer")
        if isinstance(module, torch.nn.Linear) and key.split(".")[-1] in targets:
            yield key, module


def _fingerprints(model: torch.nn.Module, targets: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """A cheap fingerprint (sum, sum of squares) of every targeted linear weight."""
    return {key: _fingerprint(module.weight) for key, module in _targeted_linears(model, targets)}


def linear_params(model: torch.nn.Module) -> int:
    """Parameters that take part in matrix multiplies (all Linear weights, tied ones once)."""
    seen = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)}
    return sum(seen.values())


def _config_hash(
    suite: Suite, method: InitMethod, task: TaskSpec, seed: int, lora: LoraSettings, lr: float, split: str = "test"
) -> str:
    payload = [suite.spec_hash, method.name, method.version, task.name, seed, lora.__dict__, lr]
    if split != "test":
        payload.append(split)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _method_package(method: InitMethod) -> str:
    return type(method).__module__.split(".")[0]


def _describe(err: Exception) -> str:
    """A failed run's ``error``: a method's own failure as it names itself, else where initbench raised."""
    if isinstance(err, MethodFailure):
        return str(err)
    frame = traceback.extract_tb(err.__traceback__)[-1]
    return f"{type(err).__name__}: {err} (at {Path(frame.filename).name}:{frame.lineno})"


def _versions() -> dict[str, str]:
    def get(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return ""

    return {
        "initbench_version": get("initbench"),
        "torch_version": torch.__version__,
        "transformers_version": get("transformers"),
        "peft_version": get("peft"),
        "lm_eval_version": get("lm_eval"),
        "python_version": sys.version.split()[0],
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{provenance.cpu_identity()['cpu_model']} ({torch.get_num_threads()} threads)"


def _peak_memory(device: torch.device) -> int:
    """Peak GPU memory of this run on CUDA; on CPU, the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
