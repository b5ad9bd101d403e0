"""Changing *what trains* in a peft LoRA layer without forking peft.

Two small tools, both written against peft's own ``LoraLayer`` so that peft's
forward, ``get_delta_weight``, ``merge``/``unmerge`` and ``state_dict`` keep
working unchanged:

``insert_middle(layer, M, trainable=True)``
    puts an r x r matrix between B and A: the adapter path becomes
    ``scale * B (M (A dropout(x)))``.  ``lora_A[adapter]`` is replaced by a
    :class:`MiddleA` module holding the original ``nn.Linear`` (``.A``) and a
    :class:`Middle` (``.middle``): its ``forward`` is ``middle(A(x))`` and its
    ``weight`` property is the (r, in) product ``M @ A.weight``, which is what
    peft's ``get_delta_weight`` (and so ``merge``/``unmerge``) reads, giving
    ``B M A``.  ``M`` is a dense (r, r) matrix, or a length-r vector for a
    diagonal middle (LoLDU, SVFit) -- a vector trains r numbers, not r*r.
    State-dict keys of such a layer are ``lora_A.<adapter>.A.weight`` and
    ``lora_A.<adapter>.middle.weight``; ``lora_B`` keeps its key.

``freeze(layer, part)`` / ``train_only(model, parts)`` / ``train_only_layer(layer, parts)``
    mark ``"A"``, ``"B"`` or ``"M"`` (the middle) of a layer as not trained.
    A frozen tensor is turned from an ``nn.Parameter`` into a buffer of the same
    name, so its value, its state-dict key and peft's forward and merge are
    unchanged, but nothing -- neither the harness's optimizer (built from the
    parameters that require a gradient) nor peft's own ``set_adapter`` /
    ``disable_adapter()``, which switch ``requires_grad`` back on for every
    adapter *parameter* -- can make it train again.

A method reaches both through its layers' views (``ctx.layers()``: ``LayerView.set_middle``,
``freeze``, ``train_only``).  Write A of a layer with a middle through ``LayerView.set_lora`` (it finds
the inner ``nn.Linear``) or :func:`lora_A_linear`; assigning ``lora_A[...].weight``
directly on a :class:`MiddleA` has no effect (it is a computed product).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

PARTS = ("A", "B", "M")


class Middle(nn.Module):
    """The r x r matrix between A and B: dense ``weight`` (r, r), or ``diagonal`` (r,) stored as a vector."""

    def __init__(self, values: torch.Tensor):
        super().__init__()
        values = values.detach().clone()
        if values.dim() == 1:
            self.diagonal = nn.Parameter(values)
        elif values.dim() == 2 and values.shape[0] == values.shape[1]:
            self.weight = nn.Parameter(values)
        else:
            raise ValueError(f"a middle matrix is (r, r) or a diagonal (r,), got shape {tuple(values.shape)}")

    @property
    def is_diagonal(self) -> bool:
        return "diagonal" in self._parameters or "diagonal" in self._buffers

    @property
    def values(self) -> torch.Tensor:
        """The stored tensor: the (r, r) matrix or the (r,) diagonal."""
        return self.diagonal if self.is_diagonal else self.weight

    def matrix(self) -> torch.Tensor:
        """M as an (r, r) matrix."""
        return torch.diag(self.diagonal) if self.is_diagonal else self.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # h: (..., r) = A x
        if self.is_diagonal:
            return h * self.diagonal.to(h.dtype)
        return nn.functional.linear(h, self.weight.to(h.dtype))


class MiddleA(nn.Module):
    """``lora_A[adapter]`` with a middle: ``forward(x) = M (A x)``, ``weight = M @ A.weight`` (r, in)."""

    def __init__(self, A: nn.Linear, middle: Middle):
        super().__init__()
        self.A = A
        self.middle = middle

    @property
    def weight(self) -> torch.Tensor:
        """The composite (r, in) weight M A that peft's ``get_delta_weight`` multiplies B by."""
        A = self.A.weight
        return self.middle.matrix().to(A.dtype) @ A

    @property
    def in_features(self) -> int:
        return self.A.in_features

    @property
    def out_features(self) -> int:
        return self.A.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.middle(self.A(x))


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every peft ``LoraLayer`` of ``model``, as (qualified name, module), in model order."""
    from peft.tuners.lora import LoraLayer

    return [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]


def active_adapter(layer: nn.Module) -> str:
    """The name of the layer's one active adapter (a ``ValueError`` when it has several or none)."""
    adapters = layer.active_adapters
    if len(adapters) != 1:
        raise ValueError(f"expected exactly one active adapter, found {adapters}")
    return adapters[0]


def _adapter(layer: nn.Module, adapter: str | None) -> str:
    return active_adapter(layer) if adapter is None else adapter


def lora_A_linear(layer: nn.Module, adapter: str | None = None) -> nn.Linear:
    """The ``nn.Linear`` holding A (r, in) of a LoRA layer, with or without a middle."""
    module = layer.lora_A[_adapter(layer, adapter)]
    return module.A if isinstance(module, MiddleA) else module


def middle_of(layer: nn.Module, adapter: str | None = None) -> Middle | None:
    """The layer's :class:`Middle`, or None if it has none."""
    module = layer.lora_A[_adapter(layer, adapter)]
    return module.middle if isinstance(module, MiddleA) else None


def insert_middle(layer: nn.Module, M: torch.Tensor, trainable: bool = True, adapter: str | None = None) -> Middle:
    """Insert (or overwrite) the middle of one peft LoRA layer: the adapter path becomes
    ``scale * B M A x``.  ``M`` is (r, r) or a length-r vector (a diagonal middle).
    Returns the :class:`Middle` module; ``trainable=False`` freezes it at once."""
    adapter = _adapter(layer, adapter)
    A = lora_A_linear(layer, adapter)
    r = A.weight.shape[0]
    if tuple(M.shape) not in ((r, r), (r,)):
        raise ValueError(f"middle of a rank-{r} adapter must be ({r}, {r}) or ({r},), got {tuple(M.shape)}")
    if not torch.isfinite(M).all():
        raise ValueError("middle matrix contains NaN or inf")
    middle = Middle(M.to(device=A.weight.device, dtype=A.weight.dtype))
    if isinstance(layer.lora_A[adapter], MiddleA):
        layer.lora_A[adapter].middle = middle
    else:
        layer.lora_A[adapter] = MiddleA(A, middle)
    if not trainable:
        freeze(layer, "M", adapter=adapter)
    return middle


def _to_buffer(module: nn.Module, name: str) -> None:
    """Turn parameter ``name`` of ``module`` into a (persistent) buffer of the same name and value."""
    if name in module._parameters:
        value = module._parameters.pop(name).detach()
        value.requires_grad_(False)
        module.register_buffer(name, value)


def _to_parameter(module: nn.Module, name: str) -> None:
    if name in module._buffers:
        value = module._buffers.pop(name)
        module.register_parameter(name, nn.Parameter(value.detach().clone()))


def _holder(layer: nn.Module, part: str, adapter: str) -> tuple[nn.Module, str] | None:
    if part == "A":
        return lora_A_linear(layer, adapter), "weight"
    if part == "B":
        return layer.lora_B[adapter], "weight"
    if part == "M":
        middle = middle_of(layer, adapter)
        if middle is None:
            return None
        return middle, "diagonal" if middle.is_diagonal else "weight"
    raise ValueError(f"part must be one of {PARTS}, got {part!r}")


def freeze(layer: nn.Module, part: str, adapter: str | None = None) -> None:
    """Stop training ``part`` (``"A"``, ``"B"`` or ``"M"``) of one LoRA layer (see the module docstring)."""
    held = _holder(layer, part, _adapter(layer, adapter))
    if held is None:
        raise ValueError("this layer has no middle matrix to freeze (insert_middle first)")
    _to_buffer(*held)


def unfreeze(layer: nn.Module, part: str, adapter: str | None = None) -> None:
    """Undo :func:`freeze`: ``part`` becomes a trainable parameter again."""
    held = _holder(layer, part, _adapter(layer, adapter))
    if held is not None:
        _to_parameter(*held)
        getattr(held[0], held[1]).requires_grad_(True)


def trainable_parts(layer: nn.Module, adapter: str | None = None) -> set[str]:
    """Which of A, B, M of one layer are trainable parameters now."""
    adapter = _adapter(layer, adapter)
    out = set()
    for part in PARTS:
        held = _holder(layer, part, adapter)
        if held is not None and held[1] in held[0]._parameters and held[0]._parameters[held[1]].requires_grad:
            out.add(part)
    return out


def _parts(parts: Iterable[str]) -> set[str]:
    parts = set(parts)
    unknown = parts - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; use {PARTS}")
    return parts


def train_only_layer(layer: nn.Module, parts: Iterable[str], adapter: str | None = None) -> None:
    """In one LoRA layer, train exactly ``parts`` (a subset of A, B, M) and freeze the rest."""
    parts = _parts(parts)
    adapter = _adapter(layer, adapter)
    for part in PARTS:
        if _holder(layer, part, adapter) is None:
            continue
        if part in parts:
            unfreeze(layer, part, adapter)
        else:
            freeze(layer, part, adapter)


def train_only(model: nn.Module, parts: Iterable[str]) -> None:
    """In every LoRA layer of ``model``, train exactly ``parts`` (a subset of A, B, M) and freeze the rest."""
    parts = _parts(parts)
    for _name, layer in lora_layers(model):
        train_only_layer(layer, parts)


def delta_weight(layer: nn.Module, adapter: str | None = None) -> torch.Tensor:
    """The layer's current update ``scale * B [M] A`` as float32 (out, in) (peft's ``get_delta_weight``)."""
    adapter = _adapter(layer, adapter)
    with torch.no_grad():
        delta = layer.get_delta_weight(adapter).detach().to(torch.float32)
    return delta.T.contiguous() if getattr(layer, "fan_in_fan_out", False) else delta
