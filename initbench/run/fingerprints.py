"""Weight fingerprints: (sum accumulated in float64, sum of squares) per tensor, to tell changed weights.

A fingerprint tells a tensor that changed from one that did not (any change that moves its sum or its
dot product with itself), cheaply: one pass, no copy.  A run keeps a lent base model only if its
fingerprints are as loaded (``initbench.run.lending``), records which base layers an init changed
(``initbench.run.attach``), and an init cache entry stores the base weights whose fingerprints moved
(``initbench.run.init_cache``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

#: a tensor's fingerprint: (sum accumulated in float64, dot product with itself)
Print = tuple[float, float]


def fingerprints(
    model: torch.nn.Module, targets: Sequence[str] | None = None, known: dict[str, Print] | None = None
) -> dict[str, Print]:
    """The fingerprint of every parameter and buffer of ``model``, by state-dict name; with ``targets``
    (module names such as ``q_proj``), of the weight of every targeted linear layer only, by layer
    name (peft's ``.base_layer`` left out).  ``known``: the state-dict fingerprints of this model
    taken earlier (a lent base model's, as loaded), looked up instead of computed."""
    if targets is None:
        named: Iterator[tuple[str, torch.Tensor]] = iter(model.state_dict(keep_vars=True).items())
        state_key = str
    else:
        named = ((key, module.weight) for key, module in _targeted_linears(model, targets))
        state_key = "{}.weight".format
    if known is not None:
        return {key: known[state_key(key)] for key, _ in named}
    return {key: fingerprint(tensor) for key, tensor in named}


def fingerprint(tensor: torch.Tensor, chunk: int = 1 << 22) -> Print:
    """(sum accumulated in float64, dot product with itself).  The float64 sum casts its input, so it
    runs in chunks (temporaries of at most 32 MB; the embedding alone is 113 MB); the dot needs none."""
    flat = tensor.detach().reshape(-1)
    if not flat.is_floating_point():
        flat = flat.double()
    total = sum(float(torch.sum(part, dtype=torch.float64)) for part in flat.split(chunk))
    return total, float(torch.dot(flat, flat))


def _targeted_linears(model: torch.nn.Module, targets: Sequence[str]) -> Iterator[tuple[str, torch.nn.Linear]]:
    """(name without peft's ``.base_layer``, module) of every targeted linear layer."""
    for name, module in model.named_modules():
        key = name.removesuffix(".base_layer")
        if isinstance(module, torch.nn.Linear) and key.split(".")[-1] in targets:
            yield key, module
