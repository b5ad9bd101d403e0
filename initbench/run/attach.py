"""Where a method meets the model: the run's LoRA settings, peft's seeded attach, the method's init.

Every hook of a method (``initbench.method.api``) is called through :func:`call_hook`, so an error raised in
one names the method, where its class lives and the hook (``MethodFailure``) rather than reading like
an initbench bug.  :func:`attach_and_initialize` is the whole init of a run: attach LoRA with peft
(seeded), build the ``InitContext`` (its calibrator grants the method's calibration allowance and
charges the run's ``Spend``), call ``initialize`` (or restore the identical init from
``initbench.run.init_cache``) and record which frozen base layers changed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from initbench.method.api import InitContext, InitMethod, LoraSettings
from initbench.method.calibration import Calibrator
from initbench.run.fingerprints import fingerprints
from initbench.run.init_cache import InitReuse, WatchedContext
from initbench.run.lending import lent_fingerprints
from initbench.spec.budget import Budget, Spend
from initbench.spec.suite import LoraSpec, Suite


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


def lora_settings(spec: LoraSpec, method: InitMethod, family: str = "") -> LoraSettings:
    """The suite's LoRA settings with the method's scaling convention (alpha, rsLoRA; for the
    suite's task ``family``) unless the suite pins them (``lora.pin_alpha``)."""
    alpha, use_rslora = spec.alpha, spec.use_rslora
    if not spec.pin_alpha:
        paper_alpha = call_hook(method, "paper_alpha", spec.rank, family)
        alpha = alpha if paper_alpha is None else float(paper_alpha)
        use_rslora = use_rslora if method.use_rslora is None else method.use_rslora
    return LoraSettings(spec.rank, alpha, tuple(spec.target_modules), spec.dropout, use_rslora)


def run_lora_settings(suite: Suite, method: InitMethod) -> tuple[LoraSettings, MethodFailure | None]:
    """A run's LoRA settings; when the method's alpha convention (``paper_alpha``) raises, the suite's
    own settings and that failure, so the run is recorded as failed rather than take its caller down."""
    try:
        return lora_settings(suite.lora, method, suite.family), None
    except MethodFailure as err:
        return lora_settings(dataclasses.replace(suite.lora, pin_alpha=True), method), err


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
    (``initbench.run.init_cache``) a stored init of the same key replaces ``initialize`` (peft's
    attach-time init still runs), and a trial's is stored."""
    as_loaded = lent_fingerprints(model)  # a lent base model: its prints as loaded are known, no pass needed
    before = fingerprints(model, lora.target_modules, known=as_loaded)
    model = attach_lora(model, method, lora, seed)
    if reuse is not None:
        restored = reuse.restore(model, spend)
        if restored is not None:
            return model, restored
        reuse.watch(model, method)
    ctx = init_context(
        model,
        tokenizer,
        method,
        lora,
        seed=seed,
        examples=examples,
        budget=budget,
        lr=lr,
        spend=spend,
        base_params=base_params,
        device=device,
        family=family,
        context_class=InitContext if reuse is None else WatchedContext,
    )
    call_hook(method, "initialize", model, ctx)
    reference = call_hook(method, "reference_calibration_examples", family)
    if reference is not None or spend.calibration_examples:
        spend.method_info.update(
            calibration_reference_examples=reference, calibration_granted_examples=ctx.calibration.allowance.examples
        )
    spend.method_info.update(ctx.info)
    after = fingerprints(model.get_base_model(), lora.target_modules)
    modified = sorted(name for name in before if before[name] != after.get(name))
    if reuse is not None:
        reuse.store(model, method, ctx, spend, modified, as_loaded)
    return model, modified


def attach_lora(model: torch.nn.Module, method: InitMethod, lora: LoraSettings, seed: int) -> torch.nn.Module:
    """The peft model of ``model`` with the run's LoRA attached, peft's own init seeded by ``seed``
    (``lora_config_kwargs`` of the method: its ``init_lora_weights``, ...)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        target_modules=list(lora.target_modules),
        lora_dropout=lora.dropout,
        use_rslora=lora.use_rslora,
        task_type="CAUSAL_LM",
        **call_hook(method, "lora_config_kwargs", lora),
    )
    torch.manual_seed(seed)
    return get_peft_model(model, config)


def init_context(
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
    context_class: type[InitContext] = InitContext,
) -> InitContext:
    """The ``InitContext`` a run hands ``initialize``: its calibrator over ``examples`` grants
    min(the method's reference amount, the suite's allowance) and charges ``spend``."""
    granted = budget.granted_calibration(call_hook(method, "reference_calibration_examples", family))
    calibrator = Calibrator(
        model,
        examples,
        granted,
        spend,
        base_params,
        seed,
        tokenizer.pad_token_id,
        device,
        tokenizer=tokenizer,
        max_length=budget.max_length,
    )
    return context_class(model, lora, seed, calibrator, tokenizer, budget=budget, lr=lr, family=family)
