"""Seeds and determinism: one call pins every random source a run touches."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def pick_device() -> torch.device:
    """CUDA when present, else CPU; ``INITBENCH_DEVICE`` overrides."""
    if "INITBENCH_DEVICE" in os.environ:
        return torch.device(os.environ["INITBENCH_DEVICE"])
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def configure_determinism(device: torch.device) -> dict[str, object]:
    """Make kernels deterministic where the device allows; returns what was set (for the results).

    On CUDA: TF32 off, cuBLAS workspace fixed (``CUBLAS_WORKSPACE_CONFIG=:4096:8``)
    and deterministic algorithms requested; bf16 autocast is chosen by the trainer.
    """
    settings: dict[str, object] = {}
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        settings["cublas_workspace_config"] = os.environ["CUBLAS_WORKSPACE_CONFIG"]
        settings["tf32"] = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    settings["deterministic_algorithms"] = True
    return settings


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> dict[str, Any]:
    """The python, numpy, torch and (where present) CUDA RNG states now, for :func:`set_rng_states`."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back the RNG states :func:`rng_states` returned."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@contextmanager
def seeded_torch_rng(generator: torch.Generator) -> Iterator[None]:
    """Run the block with torch's global RNG seeded from one draw of ``generator`` (a method's
    ``ctx.generator``), for library calls that draw from the global RNG (``torch.svd_lowrank``); the
    global CPU RNG is restored afterwards."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
