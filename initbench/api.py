"""The init-method plugin API: what a method is and what the harness hands it.

The contract, in the spirit of AlgoPerf's submission API, is three things:

1. ``InitMethod.peft_init`` -- the value the harness passes to peft's
   ``LoraConfig(init_lora_weights=...)`` when it attaches the adapters
   (``True`` for peft's default, ``"pissa"``, ``"olora"``, ...).  Methods that
   peft implements need nothing else.
2. ``InitMethod.initialize(model, ctx)`` -- a whole-model hook, called once
   after the adapters are attached and before the optimizer is built.  It may
   set ``lora_A``/``lora_B`` of each targeted layer, replace a frozen base
   weight (PiSSA's residual), ask ``ctx`` for budgeted calibration statistics,
   and change what trains: the optimizer is built afterwards from whatever
   requires a gradient, so methods that train only part of the adapter fit
   without a new hook (``initbench.adapters``: ``freeze``/``train_only`` to
   declare which of A, B train, ``insert_middle`` for an r x r matrix between
   B and A, as in LoRA-SB, LoRA-XS, NLoRA, LoLDU).
3. ``InitMethod.default_alpha(rank)`` and ``InitMethod.use_rslora`` -- the
   paper's scaling convention (``alpha = r`` for PiSSA, rsLoRA with alpha 16
   for LoRA-GA, ...); a suite may pin both for every method.

``LayerwiseInit`` is a convenience base on top of (2) for the common case: it
calls ``init_layer(weight, rank, scale, stats, generator)`` per targeted layer
and writes back ``(A, B, new_base_weight_or_None)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from initbench.adapters import active_adapter, lora_A_linear, lora_layers
from initbench.budget import OptimizerSpec

if TYPE_CHECKING:  # pragma: no cover
    from initbench.budget import Budget
    from initbench.calibration import Calibrator


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

    def build_optimizer(
        self, model: torch.nn.Module, lr: float, spec: OptimizerSpec
    ) -> torch.optim.Optimizer | None:
        """An optimizer of the method's own (e.g. LoRA+'s per-matrix rates) built with the suite's
        settings ``spec`` (betas, eps, weight decay), or None for the suite's plain optimizer."""
        return None

    def initialize(self, model: torch.nn.Module, ctx: InitContext) -> None:
        """Initialize the attached adapters in place.  The default does nothing
        beyond what ``peft_init`` already did at attach time."""


class InitContext:
    """What the harness hands ``InitMethod.initialize``.

    Attributes:
        lora: the run's LoRA settings (rank, alpha, scale, targets).
        seed: the run's seed.
        tokenizer: the base model's tokenizer (for methods that encode prompts of their own).
        generator: a CPU ``torch.Generator`` seeded from ``seed``; use it for
            every random draw so runs are reproducible.
        calibration: budgeted access to the suite's training split
            (``activation_covariance()``, ``layer_inputs()``,
            ``weight_gradients()``, ``weight_gradient_squares()``); every pass it makes is counted.
        budget: the suite's ``initbench.budget.Budget`` (steps, schedule, optimizer) the run will
            train with, for methods that simulate training (LoRA-SB's first step); None when the
            context was built without one.
        lr: the learning rate this run trains with (the suite's, or a tuning trial's); defaults to
            ``budget.optimizer.lr``, None without a budget.
        family: the suite's task family (``Suite.family``; ``""`` when it declares none).
        info: facts about this init to record with the run (the ``method_info`` column, JSON): the
            harness puts the reference and granted calibration amounts here; methods add their own
            (``ctx.info["eva_converged"] = True``).  Values must be JSON-serializable.
    """

    def __init__(
        self, model: torch.nn.Module, lora: LoraSettings, seed: int, calibration: Calibrator, tokenizer: Any = None,
        budget: Budget | None = None, lr: float | None = None, family: str = "",
    ):
        self.model = model
        self.lora = lora
        self.seed = seed
        self.tokenizer = tokenizer
        self.budget = budget
        self.lr = lr if lr is not None or budget is None else budget.optimizer.lr
        self.generator = torch.Generator().manual_seed(seed)
        self.calibration = calibration
        self.family = family
        self.info: dict[str, Any] = {}
        self.modified_base_layers: set[str] = set()

    def lora_layers(self) -> list[tuple[str, torch.nn.Module]]:
        """Every targeted peft ``LoraLayer``, as (qualified name, module), in model order."""
        return lora_layers(self.model)

    @staticmethod
    def base_weight(layer: torch.nn.Module) -> torch.Tensor:
        """The frozen base weight of a LoRA layer as a float32 (out_features, in_features) copy."""
        weight = layer.get_base_layer().weight.detach().to(torch.float32)
        return weight.T.clone() if getattr(layer, "fan_in_fan_out", False) else weight.clone()

    def set_lora(self, name: str, layer: torch.nn.Module, A: torch.Tensor, B: torch.Tensor) -> None:
        """Write ``lora_A`` (rank, in) and ``lora_B`` (out, rank) of one layer (A itself, not
        ``M A``, for a layer with a middle matrix, see ``initbench.adapters``)."""
        adapter = active_adapter(layer)
        lora_A, lora_B = lora_A_linear(layer, adapter).weight, layer.lora_B[adapter].weight
        for label, new, old in (("lora_A", A, lora_A), ("lora_B", B, lora_B)):
            if tuple(new.shape) != tuple(old.shape):
                raise InitError(f"{label} of {name} has shape {tuple(new.shape)}, expected {tuple(old.shape)}")
            if not torch.isfinite(new).all():
                raise InitError(f"{label} of {name} contains NaN or inf")
        with torch.no_grad():
            lora_A.copy_(A.to(lora_A.dtype))
            lora_B.copy_(B.to(lora_B.dtype))

    def set_base_weight(self, name: str, layer: torch.nn.Module, weight: torch.Tensor) -> None:
        """Replace the frozen base weight (out, in) of one layer; the harness records it."""
        base = layer.get_base_layer().weight
        expected = tuple(base.T.shape) if getattr(layer, "fan_in_fan_out", False) else tuple(base.shape)
        if tuple(weight.shape) != expected:
            raise InitError(f"new base weight of {name} has shape {tuple(weight.shape)}, expected {expected}")
        if not torch.isfinite(weight).all():
            raise InitError(f"new base weight of {name} contains NaN or inf")
        if getattr(layer, "fan_in_fan_out", False):
            weight = weight.T
        with torch.no_grad():
            base.copy_(weight.to(base.dtype))
        self.modified_base_layers.add(name)


Statistic = Literal["none", "activation_covariance", "weight_gradient"]


class LayerwiseInit(InitMethod):
    """Convenience base: one function per targeted layer.

    Set ``statistic`` to what the method needs from calibration data and
    implement ``init_layer``.  ``stats`` is None, the (in, in) input covariance
    E[x x^T] of the layer, or the (out, in) mean full-weight gradient.  ``weight``
    (a float32 (out, in) copy of the frozen weight) and ``stats`` are float32 on the
    model's device; ``generator`` is the CPU ``ctx.generator``.  A and B may come back
    in any float dtype on any device: ``InitContext.set_lora`` casts and copies them.
    """

    statistic: ClassVar[Statistic] = "none"

    def init_layer(
        self,
        weight: torch.Tensor,
        rank: int,
        scale: float,
        stats: torch.Tensor | None,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Return (A of shape (rank, in), B of shape (out, rank), new base weight or None)."""
        raise NotImplementedError

    def initialize(self, model: torch.nn.Module, ctx: InitContext) -> None:
        stats: dict[str, Any] = {}
        if self.statistic == "activation_covariance":
            stats = ctx.calibration.activation_covariance()
        elif self.statistic == "weight_gradient":
            stats = ctx.calibration.weight_gradients()
        for name, layer in ctx.lora_layers():
            adapter = active_adapter(layer)
            rank, scale = layer.r[adapter], layer.scaling[adapter]
            A, B, new_weight = self.init_layer(ctx.base_weight(layer), rank, scale, stats.get(name), ctx.generator)
            ctx.set_lora(name, layer, A, B)
            if new_weight is not None:
                ctx.set_base_weight(name, layer, new_weight)
