"""Reuse a trained model across runs that would train it identically.

A run's training depends on what its init depends on (the key of ``initbench.run.init_cache``: suite
spec, method, LoRA settings, seed, tokenized training examples, device, threads, CPU kernel level,
torch / peft versions, code hash), the learning rate, and the execution settings that change the
numerics (precision, ``torch.compile``, the fast loss ``INITBENCH_FAST``) -- not on the split lm-eval
scores nor on the protocol.  So in a tuned sweep the trial at (rate, tuning seed) and the tuned final
at that rate and seed train the same model, and so do the run at the suite's default rate and a tuned
final whose chosen rate is the default.  (A trial of a task without a validation split of its own
trains on the training split less the carved validation, ``data.with_validation``: other examples,
another key.)

After a run of a LoRA method trains (status ``ok``; trials and finals alike), :class:`TrainReuse`
writes ``<out>/.init-cache/trained/<key>.pt``: every parameter that requires a gradient, as trained,
the module structure (checked on restore), what the row takes from training (the ``TrainResult``:
status, curve, seconds, execution settings; the budget the steps spent) and the python / numpy /
torch RNG states after training.  A later run with the same key attaches and initializes as usual
(the init cache may restore the init), then copies the trained tensors into its trainable parameters
and skips ``train``: its row and curve are bit-identical to training (``tests/test_train_cache.py``),
with the original's ``train_seconds`` and throughput (cost tables stay honest) and ``train_reused``
true.  The columns computed from the model (diagnostics, forgetting, scores) are computed as usual.
What training changes is taken to be exactly the parameters that require a gradient (the loop's
optimizer steps them; frozen weights and buffers stay as the init left them).

Full fine-tuning (``attaches_lora`` False) stores nothing: every base parameter trains, so an entry
would be a copy of the whole model.  ``INITBENCH_INIT_REUSE=0`` switches this reuse off with the
init's; a sweep deletes the folder when it is done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from initbench.core.seeding import rng_states, set_rng_states
from initbench.run import execution
from initbench.run.init_cache import cache_folder, load_entry, save_entry, structure
from initbench.run.train import TrainResult
from initbench.spec.budget import Spend

FOLDER = "trained"  # under the init cache's folder
#: the budget fields training adds to
TRAINING_SPEND = ("train_tokens", "optimizer_steps", "flops")


def train_key(init_key: str, lr: float, device: torch.device) -> str:
    """SHA-256 (24 hex) of everything a run's training depends on: its init key, the learning rate
    and the execution settings that change the training's numerics."""
    payload = [
        init_key,
        repr(float(lr)),
        execution.precision(device),
        execution.compile_enabled(),
        execution.fast_path(),
    ]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:24]


def _spent(spend: Spend) -> dict[str, Any]:
    return {name: getattr(spend, name) for name in TRAINING_SPEND}


@dataclass
class TrainReuse:
    """The cache entry of one run's training: :meth:`restore` instead of ``train``, else :meth:`store` after it."""

    path: Path
    reused: bool = False
    _before: dict[str, Any] = field(default_factory=dict)  # the spend before training

    @classmethod
    def for_run(cls, out: Path, init_key: str, lr: float, device: torch.device) -> TrainReuse:
        return cls(cache_folder(out) / FOLDER / f"{train_key(init_key, lr, device)}.pt")

    def restore(self, model: torch.nn.Module, spend: Spend) -> TrainResult | None:
        """Write the stored training into ``model`` (attached and initialized) and ``spend``; returns the
        training's result, or None when there is no usable entry (then the caller trains as usual)."""
        self._before = _spent(spend)
        entry = load_entry(self.path)
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        try:
            usable = (
                entry is not None
                and entry["structure"] == structure(model)
                and entry["params"].keys() == trainable.keys()
                and entry["spend_before"] == self._before
            )
            result = TrainResult(**entry["trained"]) if usable else None
        except (KeyError, TypeError, AttributeError):  # an entry of another shape: train
            return None
        if result is None:
            return None
        with torch.no_grad():
            for name, tensor in entry["params"].items():
                trainable[name].copy_(tensor)
        model.eval()  # as ``train`` leaves it
        set_rng_states(entry["rng"])
        for name, value in entry["spend_after"].items():
            setattr(spend, name, value)
        self.reused = True
        return result

    def store(self, model: torch.nn.Module, trained: TrainResult, spend: Spend) -> bool:
        """Write this run's training (atomically) if it finished ``ok``; returns whether it was written."""
        if trained.status != "ok":
            return False
        params = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
        entry = {
            "structure": structure(model),
            "params": params,
            "trained": dataclasses.asdict(trained),
            "spend_before": self._before,
            "spend_after": _spent(spend),
            "rng": rng_states(),
        }
        return save_entry(entry, self.path)
