"""Reuse one initialization across the learning-rate trials of a (method, task, seed).

A tuning trial at another rate repeats exactly the same init (lora-one's takes ~4 minutes on
``mini``).  After a run's init, :class:`InitReuse` writes what the init produced to
``<out>/.init-cache/<key>.pt``; a later run with the same key restores it instead of calling
``initialize`` and is bit-identical to computing it (``tests/test_init_cache.py``).  What is stored:
every adapter tensor (peft's ``lora_*``), every base tensor the init changed (found against the
fingerprints of the lent base model), the python / numpy / torch RNG states after the init, the
budget the init spent (calibration passes, FLOPs, so the row is the same) and its ``init_seconds``
(the method's cost, so cost tables stay honest; ``init_reused`` says it was restored).

The key is everything the init can depend on: the suite's spec hash (model, LoRA, budget), the
method's name, version, class and source file, the LoRA settings after its scaling convention,
the seed, the tokenized training examples, the device, torch / peft versions, the thread count and
CPU kernel level, and initbench's code hash -- but not the learning rate.  So a method opts out by
depending on the rate: reading ``ctx.lr`` during ``initialize`` (tracked by :class:`WatchedContext`)
stores nothing.  Nothing is stored either when the init changed the module structure or what trains
(``initbench.method.adapters``: a restore writes tensors, not modules), or the method object's own
attributes, or when the base model was not lent with its fingerprints.  Every run stores (trials
and finals: the tuned finals at seeds 1 and 2 reuse the default-rate finals' inits) and any run may
restore.  ``INITBENCH_INIT_REUSE=0`` switches reuse off; the sweep
deletes the folder when it is done.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from initbench.core import atomic
from initbench.core.seeding import rng_states, set_rng_states
from initbench.method.api import InitContext, InitMethod, LoraSettings
from initbench.run.fingerprints import fingerprints
from initbench.spec.budget import Spend

FOLDER = ".init-cache"


class WatchedContext(InitContext):
    """An ``InitContext`` that notes whether the method read ``ctx.lr`` (then the init depends on the rate)."""

    lr_read = False

    @property
    def lr(self) -> float:
        self.lr_read = True
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = value


def cache_folder(out: Path) -> Path:
    """Where the inits of a results folder's trials are kept."""
    return Path(out) / FOLDER


def cache_key(
    suite_hash: str,
    method: InitMethod,
    lora: LoraSettings,
    seed: int,
    examples: list[dict[str, list[int]]],
    device: torch.device,
) -> str:
    """SHA-256 (24 hex) of everything an init depends on except the learning rate."""
    from importlib.metadata import version

    from initbench.core import provenance

    cls = type(method)
    try:
        source = hashlib.sha256(Path(inspect.getfile(cls)).read_bytes()).hexdigest()
    except (OSError, TypeError):
        source = ""
    cpu = provenance.cpu_identity()
    payload = [
        suite_hash,
        method.name,
        method.version,
        cls.__module__,
        cls.__qualname__,
        source,
        lora.__dict__,
        seed,
        hashlib.sha256(json.dumps(examples, sort_keys=True).encode()).hexdigest(),
        str(device),
        torch.__version__,
        version("peft"),
        torch.get_num_threads(),
        cpu["cpu_capability"],
        provenance.code_identity()["code_hash"],
    ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def save_entry(entry: dict[str, Any], path: Path) -> bool:
    """Write a cache entry atomically (a temporary file, then ``os.replace``); returns whether it was
    written (a full disk or a folder deleted meanwhile is not the run's failure: nothing is cached)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.replacing(path) as tmp:
            torch.save(entry, tmp)
    except OSError:
        return False
    return True


def load_entry(path: Path) -> dict[str, Any] | None:
    """The cache entry at ``path``, or None when there is none or it cannot be read (then the run computes)."""
    try:
        entry = torch.load(path, weights_only=False)
    except Exception:  # absent, truncated, not a torch file, pickled by other code: whatever it is, compute
        return None
    return entry if isinstance(entry, dict) else None


def structure(model: torch.nn.Module) -> list[tuple]:
    """The module structure a restore relies on: every parameter (shape, dtype, trainable) and buffer."""
    params = [(n, tuple(p.shape), str(p.dtype), p.requires_grad) for n, p in model.named_parameters()]
    return params + [(n, tuple(b.shape), str(b.dtype)) for n, b in model.named_buffers()]


def _base_key(name: str) -> str:
    """A peft model's state key as the unwrapped base model names it."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


@dataclass
class InitReuse:
    """The cache entry of one run's init: :meth:`restore` before ``initialize``, or :meth:`watch`
    then :meth:`store` around it."""

    path: Path
    reused: bool = False
    init_seconds: float | None = None  # the init's own cost (restored: the original's)
    started: float = 0.0  # perf_counter() when the run's init phase began (attach included)
    _structure: list[tuple] = field(default_factory=list)
    _method_state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_run(cls, out: Path, key: str, *, started: float) -> InitReuse:
        return cls(cache_folder(out) / f"{key}.pt", started=started)

    def restore(self, model: torch.nn.Module, spend: Spend) -> list[str] | None:
        """Write the stored init into ``model`` (just attached); returns the modified base layers, or
        None when there is no usable entry (then the caller initializes as usual)."""
        entry = load_entry(self.path)
        if entry is None or entry.get("structure") != structure(model):
            return None
        state = model.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, tensor in {**entry["adapter"], **entry["base"]}.items():
                state[name].copy_(tensor)
        set_rng_states(entry["rng"])
        for name, value in entry["spend"].items():
            setattr(spend, name, value)
        self.reused, self.init_seconds = True, entry["init_seconds"]
        return list(entry["modified"])

    def watch(self, model: torch.nn.Module, method: InitMethod) -> None:
        """Note the structure and the method's attributes before ``initialize``."""
        self._structure, self._method_state = structure(model), dict(vars(method))

    def store(
        self,
        model: torch.nn.Module,
        method: InitMethod,
        ctx: WatchedContext,
        spend: Spend,
        modified: list[str],
        base_prints: dict[str, tuple[float, float]] | None,
    ) -> bool:
        """Write this run's init (atomically) if it may be reused; returns whether it was written."""
        self.init_seconds = time.perf_counter() - self.started
        state = dict(vars(method))
        if (
            ctx.lr_read
            or base_prints is None
            or structure(model) != self._structure
            or state.keys() != self._method_state.keys()
            or any(state[k] is not self._method_state[k] for k in state)
        ):
            return False
        adapter = {n: t.detach().clone() for n, t in model.state_dict().items() if "lora_" in n}
        now = {n: p for n, p in fingerprints(model).items() if "lora_" not in n}
        changed = [n for n, p in now.items() if base_prints.get(_base_key(n)) != p]
        base = {n: t.detach().clone() for n, t in model.state_dict().items() if n in changed}
        entry = {
            "structure": self._structure,
            "adapter": adapter,
            "base": base,
            "modified": modified,
            "spend": dict(spend.__dict__),
            "init_seconds": self.init_seconds,
            "rng": rng_states(),
        }
        return save_entry(entry, self.path)
