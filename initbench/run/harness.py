"""One run, top to bottom: (suite, method, task, seed) -> load, attach + init, train, forgetting,
evaluate, write.

``run_one`` never raises for a failure inside a run: a method that raises, a loss that diverges or an
evaluation error becomes that run's status, written like any result, so one broken method cannot take
the others' results down.  A hook that raises names the method, where its class lives and the hook
(``initbench.run.attach.MethodFailure``); ``INITBENCH_DEBUG=1`` prints each failed run's traceback to stderr.

Each step is its own module: the base model is lent by ``initbench.run.lending``, LoRA is attached and
the method's init run by ``initbench.run.attach`` (an earlier trial's init restored by
``initbench.run.init_cache``), the budget is trained by ``initbench.run.train`` (or an identical earlier
training restored by ``initbench.run.train_cache``) and checked against ``initbench.spec.budget``, forgetting
is measured by ``initbench.run.forgetting``, lm-eval scores through ``initbench.inputs.evaluation``, and the
run's row is built by ``initbench.run.run_record`` and written by ``initbench.store.results``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from initbench.core.seeding import configure_determinism, pick_device, seed_everything
from initbench.inputs import data as task_data
from initbench.inputs.evaluation import Score, evaluate, task_primary_metric
from initbench.inputs.models import linear_params
from initbench.method.api import InitMethod, LoraSettings
from initbench.run import diagnostics, execution, export, forgetting, run_record
from initbench.run.attach import attach_and_initialize, call_hook, run_lora_settings
from initbench.run.init_cache import InitReuse, cache_key
from initbench.run.lending import base_model, return_base_model
from initbench.run.throughput import training_throughput
from initbench.run.train import train
from initbench.run.train_cache import TrainReuse
from initbench.spec.budget import BudgetMismatch, Spend
from initbench.spec.suite import Suite, TaskSpec
from initbench.spec.trust import suite_lm_eval_dir
from initbench.store import claims, samples
from initbench.store.results import DONE, finished_status, run_stem
from initbench.store.rows import ResultRow

DEBUG_ENV = "INITBENCH_DEBUG"


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
class _Run:
    """One run as its steps see it: what it is, the row it fills in, what it spent and produced."""

    suite: Suite
    method: InitMethod
    task: TaskSpec
    seed: int
    lr: float
    lora: LoraSettings
    device: torch.device
    record: ResultRow  # the result row being filled in (``initbench.run.run_record``)
    spend: Spend = field(default_factory=Spend)
    status: str = "ok"
    curve: list[dict[str, float]] = field(default_factory=list)
    scores: list[Score] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.method.name} | {self.task.name} | seed {self.seed}"


def run_one(
    suite: Suite,
    method: InitMethod,
    task: TaskSpec,
    seed: int,
    out: Path,
    *,
    force: bool = False,
    lr: float | None = None,
    split: str = "test",
    protocol: str | None = None,
    selected_lr: float | None = None,
    save_adapters: bool = False,
) -> RunOutcome:
    """Run (method, task, seed) of ``suite`` and write its files under ``out`` (skipped if already there
    and written on the same data: ``results.finished_status`` with the data's content hash).
    ``save_adapters`` (or the suite's ``save_adapters``) keeps a final run's trained adapter beside its
    results file (``initbench.run.export``).

    ``lr`` overrides the suite's learning rate and ``split`` picks what lm-eval scores
    (``validation`` for a tuning trial: trained on the training split, carved if the task has
    no validation split, see ``data.with_validation``).  Either makes the run's file stem and
    run id carry the rate and split; ``protocol`` defaults to ``fixed`` for a run at the
    suite's rate on test and ``tuned`` otherwise (``initbench.selection.protocol``)."""
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
        return _compute(
            suite,
            method,
            task,
            seed,
            out,
            stem,
            data,
            lr=lr,
            split=split,
            protocol=protocol,
            selected_lr=selected_lr,
            save_adapters=save_adapters or suite.save_adapters,
        )


def _compute(
    suite: Suite,
    method: InitMethod,
    task: TaskSpec,
    seed: int,
    out: Path,
    stem: Path,
    data: task_data.TaskData | Exception,
    *,
    lr: float | None,
    split: str,
    protocol: str | None,
    selected_lr: float | None,
    save_adapters: bool = False,
) -> RunOutcome:
    """The run itself, under its claim: load, attach + init, train, forgetting, evaluate, [save,] write.
    Forgetting is measured before lm-eval, on the trained model exactly as training left it."""
    wall_start = time.perf_counter()
    samples.discard(stem)  # an earlier computation's samples (this one writes its own, or none)
    run, lora_failure = _start(suite, method, task, seed, lr, split, protocol, selected_lr)
    loaded = model = None
    try:
        if lora_failure is not None:
            raise lora_failure
        own_tasks = suite_lm_eval_dir(suite)  # the suite's own lm-eval task folder, or None
        run.record["primary_metric"] = task_primary_metric(task, suite.path, own_tasks)[0]  # a bad key fails first
        if isinstance(data, Exception):
            raise data
        run.record["data_hash"] = data.content_hash
        loaded = base_model(suite, run.device)
        model, tokenizer, base_params = loaded.model, loaded.tokenizer, linear_params(loaded.model)
        run.record.update(
            model=loaded.label, model_revision=loaded.revision, total_params=sum(p.numel() for p in model.parameters())
        )
        seed_everything(seed)
        held = forgetting.run_held_set(suite, method, split, loaded, run.device)  # the untouched base model's side
        if method.trains:
            examples = task_data.tokenize_records(data.records("train"), tokenizer, suite.budget.max_length)
            tracker = None
            if method.attaches_lora and diagnostics.enabled():
                tracker = diagnostics.Tracker(diagnostics.snapshot(model, run.lora.target_modules))
            model, train_reuse = _initialize(run, model, tokenizer, examples, base_params, out, tracker)
            _train(run, model, tokenizer, examples, base_params, train_reuse, tracker)
        else:
            run.record.update(trainable_params=0, base_weights_modified=False, modified_layers=0, init_seconds=0.0)
        if run.status == "ok" and held is not None:
            run.record["forgetting_kl"], run.record["forgetting_set"] = forgetting.mean_token_kl(model, held), held.name
        if run.status == "ok":
            run.scores, run.record["eval_seconds"] = evaluate(
                model,
                tokenizer,
                task.lm_eval_task,
                data,
                batch_size=suite.eval.batch_size,
                limit=suite.eval.limit,
                seed=seed,
                split=split,
                chat_template=suite.eval.chat_template,
                keep_samples=samples.sink(stem, run.record["run_id"], split),
                folder=own_tasks,
            )
        if run.status == "ok" and save_adapters and split == "test" and method.trains:
            export.save_run(stem, suite, loaded, model, examples, run.record, _by_metric(run.scores), run.label)
    except Exception as err:  # recorded as this run's failure; the sweep goes on
        run.status, run.scores = "failed", []
        run.record["error"] = run_record.failure_text(err)
        if debug_enabled():
            print(f"initbench: {run.label} failed; traceback ({DEBUG_ENV}=1):", file=sys.stderr)
            traceback.print_exception(err, file=sys.stderr)
    if loaded is not None:
        return_base_model(loaded, model)
    path = run_record.write(stem, run.record, run.spend, run.status, run.scores, run.curve, run.device, wall_start)
    return RunOutcome(
        method.name, task.name, seed, run.status, path, run.record.get("error", ""), _by_metric(run.scores)
    )


def _start(
    suite: Suite,
    method: InitMethod,
    task: TaskSpec,
    seed: int,
    lr: float | None,
    split: str,
    protocol: str | None,
    selected_lr: float | None,
) -> tuple[_Run, Exception | None]:
    """Threads, device and determinism for the run, its LoRA settings and the columns known before it
    computes; and the failure of the method's alpha convention, if it raised (``run_lora_settings``)."""
    execution.apply_threads()
    device = pick_device()
    determinism = configure_determinism(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    lora, lora_failure = run_lora_settings(suite, method)
    record = run_record.metadata(suite, method, task, seed, lora, lr, split, protocol, selected_lr, device, determinism)
    lr = suite.budget.optimizer.lr if lr is None else float(lr)
    return _Run(suite, method, task, seed, lr, lora, device, record), lora_failure


def _initialize(
    run: _Run,
    model: torch.nn.Module,
    tokenizer,
    examples: list[dict[str, list[int]]],
    base_params: int,
    out: Path,
    tracker: diagnostics.Tracker | None,
) -> tuple[torch.nn.Module, TrainReuse | None]:
    """Attach LoRA and run the method's init (an earlier trial's identical init restored where there is
    one), or, for full fine-tuning, make every base parameter trainable; record what the init did and
    what now trains.  Returns the model to train and where an identical training may be restored from."""
    start, reuse, train_reuse, modified = time.perf_counter(), None, None, []
    if run.method.attaches_lora:
        if execution.init_reuse_enabled():
            key = cache_key(run.suite.spec_hash, run.method, run.lora, run.seed, examples, run.device)
            reuse = InitReuse.for_run(out, key, started=start)
            train_reuse = TrainReuse.for_run(out, key, run.lr, run.device)
        model, modified = attach_and_initialize(
            model,
            tokenizer,
            run.method,
            run.lora,
            seed=run.seed,
            examples=examples,
            budget=run.suite.budget,
            lr=run.lr,
            spend=run.spend,
            base_params=base_params,
            device=run.device,
            family=run.suite.family,
            reuse=reuse,
        )
        if tracker is not None:
            tracker.after_init(model)
    else:  # a full fine-tuning reference: every base parameter trains, nothing changes at init
        model.requires_grad_(True)
    run.record.update(
        init_seconds=time.perf_counter() - start if reuse is None else reuse.init_seconds,
        init_reused=reuse is not None and reuse.reused,
        base_weights_modified=bool(modified),
        modified_layers=len(modified),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
    )
    return model, train_reuse


def _train(
    run: _Run,
    model: torch.nn.Module,
    tokenizer,
    examples: list[dict[str, list[int]]],
    base_params: int,
    train_reuse: TrainReuse | None,
    tracker: diagnostics.Tracker | None,
) -> None:
    """Train exactly the budget (or restore the identical training an earlier run did), refuse a run
    that spent other than its budget (``Budget.spent_problems``) and record what training produced."""
    budget, spend, record = run.suite.budget, run.spend, run.record
    flops_before = spend.flops
    trained = None if train_reuse is None else train_reuse.restore(model, spend)
    if trained is None:
        trained = train(
            model,
            examples,
            budget,
            lr=run.lr,
            seed=run.seed,
            pad_id=tokenizer.pad_token_id,
            device=run.device,
            spend=spend,
            base_params=base_params,
            label=run.label,
            optimizer=call_hook(run.method, "build_optimizer", model, run.lr, budget.optimizer),
        )
        if train_reuse is not None:
            train_reuse.store(model, trained, spend)
    record["train_reused"] = train_reuse is not None and train_reuse.reused
    run.status, run.curve = trained.status, trained.curve
    spent = budget.spent_problems(
        spend.optimizer_steps, spend.train_tokens, spend.calibration_examples, status=run.status
    )
    if spent:  # never publish a run that spent other than its budget
        raise BudgetMismatch(f"the run spent other than its budget: {'; '.join(spent)}")
    record["train_seconds"] = trained.seconds
    record["execution"] = json.dumps(trained.execution, sort_keys=True)
    record.update(
        training_throughput(
            spend.flops - flops_before, spend.train_tokens, trained.seconds, run.device.type, record["device_name"]
        )
    )
    record["final_train_loss"] = run.curve[-1]["loss"] if run.curve else None
    if tracker is not None:
        record.update(tracker.summary(model))


def _by_metric(scores: list[Score]) -> dict[str, float]:
    return {s.metric: s.value for s in scores}


def debug_enabled() -> bool:
    """Whether ``INITBENCH_DEBUG`` asks for the traceback of every failed run on stderr."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")
