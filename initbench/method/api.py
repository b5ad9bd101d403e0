"""The init-method plugin API: what a method is and what the harness hands it.

The contract, in the spirit of AlgoPerf's submission API, is three things:

1. ``InitMethod.peft_init`` -- the value the harness passes to peft's
   ``LoraConfig(init_lora_weights=...)`` when it attaches the adapters
   (``True`` for peft's default, ``"pissa"``, ``"olora"``, ...).  Methods that
   peft implements need nothing else.
2. ``InitMethod.initialize(model, ctx)`` -- a whole-model hook, called once
   after the adapters are attached and before the optimizer is built.  ``ctx``
   (:class:`InitContext`) hands out one :class:`LayerView` per targeted layer
   (``ctx.layers()``: name, shape, rank, scale, base weight; ``set_lora``,
   ``set_base_weight`` for PiSSA's residual, ``set_middle`` for an r x r matrix
   between B and A as in LoRA-SB, LoRA-XS, NLoRA, LoLDU, ``freeze`` /
   ``train_only`` to declare which parts train), budgeted calibration data
   (``ctx.calibration``), the seeded generator, the budget and the rate.  The
   optimizer is built afterwards from whatever requires a gradient.
3. ``InitMethod.default_alpha(rank)`` and ``InitMethod.use_rslora`` -- the
   paper's scaling convention (``alpha = r`` for PiSSA, rsLoRA with alpha 16
   for LoRA-GA, ...); a suite may pin both for every method.

``LayerwiseInit`` is a convenience base on top of (2) for the common case: it
computes one calibration statistic (``statistic``, or its own ``statistics``),
calls ``init_layer(weight, rank, scale, stats, generator)`` per targeted layer
and writes back ``(A, B, new_base_weight_or_None)`` or a :class:`LayerInit`
(with a middle matrix), freezing the parts not in ``trained_parts``.
CONTRIBUTING.md states the contract; ``tests/test_contract.py`` holds it to this code.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import torch

from initbench.core.seeding import seeded_torch_rng
from initbench.method.adapters import (
    PARTS,
    active_adapter,
    freeze,
    insert_middle,
    lora_A_linear,
    lora_layers,
    middle_of,
    train_only_layer,
    trainable_parts,
)
from initbench.spec.budget import OptimizerSpec

if TYPE_CHECKING:  # pragma: no cover
    from initbench.method.calibration import Calibrator
    from initbench.spec.budget import Budget


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA hyperparameters a run attaches with (after the method's scaling convention)."""

    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    dropout: float = 0.0
    use_rslora: bool = False

    @property
    def scale(self) -> float:
        """The factor peft multiplies ``B @ A`` by: alpha/r, or alpha/sqrt(r) with rsLoRA."""
        return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)


class InitError(RuntimeError):
    """A method produced something the harness cannot use (wrong shape, NaN, ...)."""


class InitMethod:
    """Base class of every init method.  Subclass it and register the class under
    the ``initbench.methods`` entry-point group; the entry-point name is the
    method's name.

    Class attributes a method sets:
        summary: one line shown by ``initbench methods``.
        paper: citation or URL of the paper.
        code: URL of the reference implementation.
        peft_init: value for ``LoraConfig.init_lora_weights`` at attach time.
        is_reference: True for reference rows (``base``, ``full-ft``), which
            tables show apart from the methods.
        trains: False for a row evaluated without training (``base``).
        attaches_lora: False for a row that trains without adapters (``full-ft``:
            every base parameter trains).
    """

    name: str = ""  # filled in by the registry from the entry-point name
    version: str = ""  # filled in by the registry from the distribution's version
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    code: ClassVar[str] = ""
    peft_init: ClassVar[bool | str] = True
    is_reference: ClassVar[bool] = False
    trains: ClassVar[bool] = True
    attaches_lora: ClassVar[bool] = True
    use_rslora: bool | None = None  # the paper's choice of alpha/sqrt(r) scaling; None takes the suite's
    #: calibration examples the reference implementation uses (see ``reference_calibration_examples``)
    calibration_reference: ClassVar[int | None] = None

    def default_alpha(self, rank: int) -> float | None:
        """The paper's alpha for this rank, or None to take the suite's alpha."""
        return None

    def paper_alpha(self, rank: int, family: str) -> float | None:
        """The paper's alpha for this rank on a suite of this task family (``Suite.family``: ``math``,
        ``commonsense``, ``glue`` or ``""``), for papers whose convention depends on the task (LoRA-XS);
        the harness calls this one.  Default: ``default_alpha(rank)``."""
        return self.default_alpha(rank)

    def reference_calibration_examples(self, family: str) -> int | None:
        """How many calibration examples the method's reference implementation uses (for the suite's
        task family); the run is granted min(this, the suite's ``budget.calibration.examples``) and
        records both (``method_info``).  Default: ``calibration_reference`` (None: no fixed amount, the
        whole allowance)."""
        return self.calibration_reference

    def lora_config_kwargs(self, lora: LoraSettings) -> dict[str, Any]:
        """Extra ``peft.LoraConfig`` keyword arguments at attach time (default: ``init_lora_weights``).
        Override to pass e.g. ``corda_config`` or ``eva_config``."""
        return {"init_lora_weights": self.peft_init}

    def build_optimizer(self, model: torch.nn.Module, lr: float, spec: OptimizerSpec) -> torch.optim.Optimizer | None:
        """An optimizer of the method's own (e.g. LoRA+'s per-matrix rates) built with the suite's
        settings ``spec`` (betas, eps, weight decay), or None for the suite's plain optimizer."""
        return None

    def initialize(self, model: torch.nn.Module, ctx: InitContext) -> None:
        """Initialize the attached adapters in place.  The default does nothing
        beyond what ``peft_init`` already did at attach time."""


class LayerView:
    """One targeted LoRA layer as a method reads and writes it (``ctx.layers()``), without peft's
    internals: its name, shape, rank and scale, its frozen base weight and factors, and the writes a method may make
    (A and B, the base weight, a middle matrix, which parts train).  Every write checks shape and
    finiteness and raises ``InitError`` naming the layer.

    ``module`` (the peft ``LoraLayer``) and ``adapter`` (its adapter's name) are there only for calling
    peft's own per-layer inits (``module.corda_init(adapter, ...)``); anything else goes through the view.
    """

    def __init__(self, name: str, module: torch.nn.Module):
        self.name: str = name
        self.module: torch.nn.Module = module
        self.adapter: str = active_adapter(module)

    def __repr__(self) -> str:
        return f"LayerView({self.name!r}, out={self.out_features}, in={self.in_features}, rank={self.rank})"

    @property
    def in_features(self) -> int:
        """The layer's input width (columns of ``base_weight()``)."""
        return int(self.module.in_features)

    @property
    def out_features(self) -> int:
        """The layer's output width (rows of ``base_weight()``)."""
        return int(self.module.out_features)

    @property
    def rank(self) -> int:
        """The adapter's rank r as peft attached it (``ctx.lora.rank`` unless per-layer patterns differ)."""
        return int(self.module.r[self.adapter])

    @property
    def scale(self) -> float:
        """What peft multiplies ``B [M] A`` by in this layer (alpha / r, or alpha / sqrt(r) with rsLoRA)."""
        return float(self.module.scaling[self.adapter])

    def base_weight(self) -> torch.Tensor:
        """A float32 (out, in) copy of the frozen base weight (transposed for a ``fan_in_fan_out`` layer),
        on the model's device."""
        weight = self.module.get_base_layer().weight.detach().to(torch.float32)
        return weight.T.clone() if getattr(self.module, "fan_in_fan_out", False) else weight.clone()

    @property
    def A(self) -> torch.Tensor:
        """A float32 copy of A (rank, in) as it is now (A itself, not ``M A``, under a middle matrix)."""
        return lora_A_linear(self.module, self.adapter).weight.detach().to(torch.float32).clone()

    @property
    def B(self) -> torch.Tensor:
        """A float32 copy of B (out, rank) as it is now."""
        return self.module.lora_B[self.adapter].weight.detach().to(torch.float32).clone()

    def set_lora(self, A: torch.Tensor, B: torch.Tensor) -> None:
        """Write A (rank, in) and B (out, rank), cast to the adapter's dtype and moved to its device (A
        itself, not ``M A``, under a middle matrix)."""
        lora_A = lora_A_linear(self.module, self.adapter).weight
        lora_B = self.module.lora_B[self.adapter].weight
        for label, new, old in (("lora_A", A, lora_A), ("lora_B", B, lora_B)):
            if tuple(new.shape) != tuple(old.shape):
                raise InitError(f"{label} of {self.name} has shape {tuple(new.shape)}, expected {tuple(old.shape)}")
            if not torch.isfinite(new).all():
                raise InitError(f"{label} of {self.name} contains NaN or inf")
        with torch.no_grad():
            lora_A.copy_(A.to(lora_A.dtype))
            lora_B.copy_(B.to(lora_B.dtype))

    def set_base_weight(self, weight: torch.Tensor) -> None:
        """Replace the frozen base weight (out, in) (PiSSA's residual), cast to the base model's dtype."""
        base = self.module.get_base_layer().weight
        transposed = getattr(self.module, "fan_in_fan_out", False)
        expected = tuple(base.T.shape) if transposed else tuple(base.shape)
        if tuple(weight.shape) != expected:
            raise InitError(f"new base weight of {self.name} has shape {tuple(weight.shape)}, expected {expected}")
        if not torch.isfinite(weight).all():
            raise InitError(f"new base weight of {self.name} contains NaN or inf")
        with torch.no_grad():
            base.copy_((weight.T if transposed else weight).to(base.dtype))

    def set_middle(self, M: torch.Tensor, trainable: bool = True) -> None:
        """Put M between B and A (the adapter path becomes ``scale * B M A x``): (rank, rank), or (rank,)
        for a diagonal that trains r numbers; ``trainable=False`` freezes it (``initbench.method.adapters``)."""
        try:
            insert_middle(self.module, M, trainable=trainable, adapter=self.adapter)
        except ValueError as err:
            raise InitError(f"middle of {self.name}: {err}") from None

    @property
    def middle(self) -> torch.Tensor | None:
        """A float32 copy of the middle matrix ((rank, rank), or (rank,) for a diagonal), None without one."""
        middle = middle_of(self.module, self.adapter)
        return None if middle is None else middle.values.detach().to(torch.float32).clone()

    def freeze(self, part: str) -> None:
        """Stop training ``part`` of this layer: ``"A"``, ``"B"`` or ``"M"`` (the middle)."""
        try:
            freeze(self.module, part, adapter=self.adapter)
        except ValueError as err:
            raise InitError(f"freeze {part!r} of {self.name}: {err}") from None

    def train_only(self, parts: Iterable[str]) -> None:
        """Train exactly ``parts`` (a subset of A, B, M) of this layer and freeze the rest."""
        try:
            train_only_layer(self.module, parts, adapter=self.adapter)
        except ValueError as err:
            raise InitError(f"train_only of {self.name}: {err}") from None

    @property
    def trainable_parts(self) -> set[str]:
        """Which of A, B, M train now."""
        return trainable_parts(self.module, self.adapter)


class InitContext:
    """What the harness hands ``InitMethod.initialize`` besides the model.

    Attributes:
        lora: the run's LoRA settings (rank, alpha, scale, targets).
        seed: the run's seed.
        tokenizer: the base model's tokenizer (for methods that encode prompts of their own).
        generator: a CPU ``torch.Generator`` seeded from ``seed``; use it for
            every random draw so runs are reproducible.
        calibration: budgeted access to the suite's training split
            (``activation_covariance()``, ``layer_inputs()``, ``weight_gradients()``,
            ``weight_gradient_squares()``, ``encode()`` for data of the method's own); every pass it
            makes is counted.
        budget: the suite's ``initbench.spec.budget.Budget`` (steps, schedule, optimizer) the run will
            train with, for methods that simulate training (LoRA-SB's first step).
        lr: the learning rate this run trains with (the suite's, or a tuning trial's).
        family: the suite's task family (``Suite.family``; ``""`` when it declares none).
        info: facts about this init to record with the run (the ``method_info`` column, JSON): the
            harness puts the reference and granted calibration amounts here; methods add their own
            (``ctx.info["eva_converged"] = True``).  Values must be JSON-serializable.

    The model is ``initialize``'s first argument; ``ctx.model``, the same object, is deprecated.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        lora: LoraSettings,
        seed: int,
        calibration: Calibrator,
        tokenizer: Any,
        *,
        budget: Budget,
        lr: float,
        family: str = "",
    ):
        self._model = model
        self.lora: LoraSettings = lora
        self.seed: int = seed
        self.tokenizer: Any = tokenizer
        self.budget: Budget = budget
        self.lr: float = lr
        self.generator: torch.Generator = torch.Generator().manual_seed(seed)
        self.calibration: Calibrator = calibration
        self.family: str = family
        self.info: dict[str, Any] = {}

    @property
    def model(self) -> torch.nn.Module:
        """Deprecated: the model ``initialize`` was handed as its first argument (the same object)."""
        warnings.warn(
            "ctx.model is deprecated: use the model initialize(model, ctx) receives", DeprecationWarning, stacklevel=2
        )
        return self._model

    def layers(self) -> list[LayerView]:
        """A :class:`LayerView` of every targeted LoRA layer, in model order."""
        return [LayerView(name, module) for name, module in lora_layers(self._model)]

    def lora_layers(self) -> list[tuple[str, torch.nn.Module]]:
        """Every targeted peft ``LoraLayer``, as (qualified name, module), in model order (prefer ``layers()``)."""
        return lora_layers(self._model)

    @staticmethod
    def base_weight(layer: torch.nn.Module) -> torch.Tensor:
        """The frozen base weight of a peft LoRA layer as a float32 (out_features, in_features) copy
        (``LayerView.base_weight``)."""
        return LayerView("", layer).base_weight()

    def set_lora(self, name: str, layer: torch.nn.Module, A: torch.Tensor, B: torch.Tensor) -> None:
        """Write ``lora_A`` (rank, in) and ``lora_B`` (out, rank) of one peft LoRA layer (``LayerView.set_lora``)."""
        LayerView(name, layer).set_lora(A, B)

    def set_base_weight(self, name: str, layer: torch.nn.Module, weight: torch.Tensor) -> None:
        """Replace the frozen base weight (out, in) of one peft LoRA layer (``LayerView.set_base_weight``)."""
        LayerView(name, layer).set_base_weight(weight)


Statistic = Literal["none", "activation_covariance", "weight_gradient", "weight_gradient_squares"]
#: the ``Calibrator`` method that computes each statistic
_CALIBRATOR_METHOD = {
    "activation_covariance": "activation_covariance",
    "weight_gradient": "weight_gradients",
    "weight_gradient_squares": "weight_gradient_squares",
}


@dataclass
class LayerInit:
    """What ``LayerwiseInit.init_layer`` returns for one layer; a plain tuple ``(A, B, base)`` means
    ``LayerInit(A, B, base)``."""

    A: torch.Tensor  # (rank, in)
    B: torch.Tensor  # (out, rank)
    base: torch.Tensor | None = None  # the new frozen base weight (out, in); None keeps it
    middle: torch.Tensor | None = None  # (rank, rank), or (rank,) for a diagonal, between B and A; None: none


class LayerwiseInit(InitMethod):
    """Convenience base: one function per targeted layer.

    Set ``statistic`` to what the method needs from calibration data (or override ``statistics``) and
    implement ``init_layer``.  ``stats`` is None (``"none"``), the (in, in) input covariance E[x x^T]
    of the layer (``"activation_covariance"``), the (out, in) mean full-weight gradient
    (``"weight_gradient"``) or the (out, in) mean of squared batch gradients
    (``"weight_gradient_squares"``).  ``weight`` (a float32 (out, in) copy of the frozen weight) and
    ``stats`` are float32 on the model's device; ``generator`` is the CPU ``ctx.generator``.
    ``init_layer`` returns ``(A, B, new_base_or_None)`` or a :class:`LayerInit` (with a middle matrix);
    A, B, base and middle may come in any float dtype on any device: the view casts and copies them.
    Parts of every layer not in ``trained_parts`` are frozen; ``seed_torch_rng`` runs the per-layer loop
    with torch's global RNG seeded from ``ctx.generator`` (for ``torch.svd_lowrank``).
    """

    statistic: ClassVar[Statistic] = "none"
    trained_parts: ClassVar[tuple[str, ...]] = PARTS
    seed_torch_rng: ClassVar[bool] = False

    def statistics(self, ctx: InitContext) -> dict[str, torch.Tensor]:
        """Per layer name, the ``stats`` handed to ``init_layer``: the calibration statistic ``statistic``
        names (every granted example; {} for ``"none"``).  Override for a statistic of the method's own,
        computed through ``ctx.calibration`` (LoRA-SB: its simulated first step)."""
        if self.statistic == "none":
            return {}
        if self.statistic not in _CALIBRATOR_METHOD:
            raise InitError(
                f"{type(self).__name__}.statistic is {self.statistic!r}; use one of "
                f"{', '.join(repr(s) for s in get_args(Statistic))}"
            )
        return getattr(ctx.calibration, _CALIBRATOR_METHOD[self.statistic])()

    def init_layer(
        self,
        weight: torch.Tensor,
        rank: int,
        scale: float,
        stats: torch.Tensor | None,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | LayerInit:
        """Return (A of shape (rank, in), B of shape (out, rank), new base weight or None), or a ``LayerInit``."""
        raise NotImplementedError

    def initialize(self, model: torch.nn.Module, ctx: InitContext) -> None:
        unknown = set(self.trained_parts) - set(PARTS)
        if unknown:
            raise InitError(f"{type(self).__name__}.trained_parts has {sorted(unknown)}; use a subset of {PARTS}")
        stats = self.statistics(ctx)
        with seeded_torch_rng(ctx.generator) if self.seed_torch_rng else nullcontext():
            for layer in ctx.layers():
                result = self.init_layer(
                    layer.base_weight(), layer.rank, layer.scale, stats.get(layer.name), ctx.generator
                )
                self._write(layer, result)

    def _write(self, layer: LayerView, result: tuple | LayerInit) -> None:
        """Write what ``init_layer`` returned into ``layer``, then freeze the parts that do not train."""
        if not isinstance(result, LayerInit):
            if not isinstance(result, tuple) or len(result) != 3:
                raise InitError(
                    f"init_layer returned {type(result).__name__} for {layer.name}; "
                    "return (A, B, new_base_or_None) or a LayerInit"
                )
            result = LayerInit(*result)
        layer.set_lora(result.A, result.B)
        if result.base is not None:
            layer.set_base_weight(result.base)
        if result.middle is not None:
            layer.set_middle(result.middle)
        for part in PARTS:
            if part not in self.trained_parts and (part != "M" or result.middle is not None):
                layer.freeze(part)
