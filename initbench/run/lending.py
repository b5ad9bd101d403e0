"""Base-model lending: one base model per process and device, lent to one run at a time.

Loaded once per process and never copied (a copy would double the memory a run needs): a run
borrows the one model (:func:`base_model`), and when it gives it back (:func:`return_base_model`) the
model is kept for the next run only if it is pristine again -- adapters unloaded, every parameter and
buffer fingerprint (``initbench.run.fingerprints``) equal to what was loaded, nothing left trainable.
Otherwise (PiSSA's residual, full fine-tuning) it is dropped and the next run loads it again (from
initbench's cache for the embedded default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from initbench.inputs.models import LoadedModel, load_model
from initbench.run.fingerprints import Print, fingerprints
from initbench.spec.suite import Suite


@dataclass
class _HeldModel:
    key: str  # the suite's model spec and the device
    loaded: LoadedModel
    prints: dict[str, Print]  # every parameter and buffer, as loaded


_BASE_MODELS: dict[str, _HeldModel] = {}  # pristine models waiting for a run
_LENT: dict[int, _HeldModel] = {}  # models a run holds, by id of the model


def model_key(suite: Suite, device: torch.device) -> str:
    """What identifies a loaded base model in this process: the suite's model spec and the device."""
    return json.dumps([suite.model.__dict__, str(device)], sort_keys=True, default=str)


def base_model(suite: Suite, device: torch.device) -> LoadedModel:
    """The suite's base model for one run, lent until :func:`return_base_model`."""
    key = model_key(suite, device)
    held = _BASE_MODELS.pop(key, None)
    if held is None:
        loaded = load_model(suite.model, device)
        held = _HeldModel(key, loaded, fingerprints(loaded.model))
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
    if fingerprints(model) != held.prints:
        return False
    _BASE_MODELS[held.key] = held
    return True


def lent_fingerprints(model: torch.nn.Module) -> dict[str, Print] | None:
    """The fingerprints, as loaded, of ``model`` if it is a base model lent now; None for any other."""
    held = _LENT.get(id(model))
    return None if held is None else held.prints


def pristine_base(suite: Suite, loaded: LoadedModel) -> torch.nn.Module:
    """The base model lent as ``loaded`` loaded once more, on its device, and checked against the prints
    taken when it was first loaded: the original weights an export is relative to, whatever the run did
    to the lent one (PiSSA's residual, LoftQ's quantized base)."""
    prints = lent_fingerprints(loaded.model)
    fresh = load_model(suite.model, next(loaded.model.parameters()).device).model
    if prints is None or fingerprints(fresh) != prints:
        raise RuntimeError(
            "the base model loaded again differs from the one this run borrowed (a changed model "
            "cache?); its adapter cannot be exported against it"
        )
    return fresh
