"""The compute budget a suite grants every method, and the record of what a run spent.

Training budget: exactly ``steps`` optimizer steps of ``batch_size`` examples
truncated to ``max_length`` tokens, so at most steps x batch x max_length tokens.
Calibration allowance: at most ``calibration.examples`` example-passes for
data-driven inits (an example seen in two statistics counts twice).

FLOPs are estimated with the usual dense-transformer rule (Kaplan et al. 2020):
a forward pass costs 2 N FLOPs per token, a backward pass 4 N, where N is the
number of non-embedding parameters of the base model.  LoRA training needs the
backward pass through the frozen weights for activation gradients only, so a
training step is counted as 2N (forward) + 2N (input gradients) + 6 n (the
trainable parameters n) per token; a calibration pass that takes full-weight
gradients is counted as 6N per token.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


class BudgetExceeded(RuntimeError):
    """A method asked for more calibration data than the suite allows."""


class BudgetMismatch(RuntimeError):
    """A run spent other than its budget (steps, tokens, calibration): its numbers are not comparable."""


@dataclass(frozen=True)
class OptimizerSpec:
    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    max_grad_norm: float = 1.0


@dataclass(frozen=True)
class ScheduleSpec:
    name: str = "linear"  # any transformers.get_scheduler name
    warmup_ratio: float = 0.0


@dataclass(frozen=True)
class CalibrationSpec:
    examples: int = 32
    batch_size: int = 8


@dataclass(frozen=True)
class Budget:
    steps: int
    batch_size: int
    max_length: int
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)

    @property
    def max_train_tokens(self) -> int:
        return self.steps * self.batch_size * self.max_length

    def granted_calibration(self, reference: int | None) -> CalibrationSpec:
        """The calibration a method gets: min(the examples its reference uses, the suite's allowance)."""
        if reference is None:
            return self.calibration
        return CalibrationSpec(min(reference, self.calibration.examples), self.calibration.batch_size)

    def spent_problems(
        self,
        steps: int | None,
        tokens: int | None,
        calibration_examples: int | None,
        *,
        status: str,
        trains: bool = True,
    ) -> list[str]:
        """Why what a run spent is not what this budget grants ([] when it is): a finished run of a
        training method took exactly ``steps`` optimizer steps (a diverged one at most that), at least
        one and at most ``max_train_tokens`` training tokens, and no more calibration examples than
        allowed; a method that does not train spent no step and no token.  A failed run is not checked."""
        if status == "failed":
            return []
        if not trains:
            return (
                [f"{steps} optimizer steps, {tokens} training tokens for a method that does not train"]
                if steps or tokens
                else []
            )
        out = []
        if steps is None or (steps != self.steps if status == "ok" else not 0 <= steps <= self.steps):
            out.append(f"{steps} optimizer steps, the suite grants budget.steps {self.steps}")
        if tokens is None or not 0 < tokens <= self.max_train_tokens:
            out.append(
                f"{tokens} training tokens, the suite grants at most {self.max_train_tokens:,} "
                f"(steps x batch_size x max_length)"
            )
        if calibration_examples is not None and not 0 <= calibration_examples <= self.calibration.examples:
            out.append(
                f"{calibration_examples} calibration examples, the suite grants at most {self.calibration.examples}"
            )
        return out

    def validate(self, where: str) -> None:
        positive = {
            "budget.steps": self.steps,
            "budget.batch_size": self.batch_size,
            "budget.max_length": self.max_length,
            "budget.optimizer.lr": self.optimizer.lr,
            "budget.calibration.batch_size": self.calibration.batch_size,
        }
        for key, value in positive.items():
            if not (math.isfinite(value) and value > 0):  # NaN and inf (`.inf`, `.nan` in YAML) are not rates
                raise ValueError(f"{where}: key '{key}' must be positive and finite, got {value}")
        spec = self.optimizer
        if not (math.isfinite(spec.weight_decay) and spec.weight_decay >= 0):
            raise ValueError(
                f"{where}: key 'budget.optimizer.weight_decay' must be >= 0 and finite, got {spec.weight_decay}"
            )
        if not (math.isfinite(spec.eps) and spec.eps > 0) or not (
            math.isfinite(spec.max_grad_norm) and spec.max_grad_norm > 0
        ):
            raise ValueError(f"{where}: keys 'budget.optimizer.eps' and 'max_grad_norm' must be positive and finite")
        if len(spec.betas) != 2 or not all(0 <= b < 1 for b in spec.betas):
            raise ValueError(f"{where}: key 'budget.optimizer.betas' must be two numbers in [0, 1), got {spec.betas}")
        if self.calibration.examples < 0:
            raise ValueError(f"{where}: key 'budget.calibration.examples' must be >= 0")
        if self.optimizer.name not in ("adamw", "sgd"):
            raise ValueError(f"{where}: key 'budget.optimizer.name' must be adamw or sgd, got {self.optimizer.name!r}")
        if not 0 <= self.schedule.warmup_ratio < 1:
            raise ValueError(f"{where}: key 'budget.schedule.warmup_ratio' must be in [0, 1)")


@dataclass
class Spend:
    """What one run actually consumed; every field lands in its result rows."""

    train_tokens: int = 0
    optimizer_steps: int = 0
    calibration_examples: int = 0
    calibration_forward_passes: int = 0
    calibration_backward_passes: int = 0
    calibration_tokens: int = 0
    flops: float = 0.0
    #: facts recorded at init (``InitContext.info``: reference vs granted calibration examples, EVA's
    #: convergence, ...); lands in the ``method_info`` column as JSON (issue 14 item 7)
    method_info: dict[str, Any] = field(default_factory=dict)

    def columns(self) -> dict[str, Any]:
        """The result-row columns of this spend (``method_info`` as a JSON string, None when empty)."""
        row = {k: v for k, v in self.__dict__.items() if k != "method_info"}
        row["method_info"] = json.dumps(self.method_info, sort_keys=True, default=str) if self.method_info else None
        return row

    def add_training_step(self, tokens: int, base_params: int, trainable_params: int) -> None:
        self.train_tokens += tokens
        self.optimizer_steps += 1
        self.flops += tokens * (4 * base_params + 6 * trainable_params)

    def add_calibration_batch(self, examples: int, tokens: int, base_params: int, backward: bool) -> None:
        self.calibration_examples += examples
        self.calibration_forward_passes += 1
        self.calibration_backward_passes += int(backward)
        self.calibration_tokens += tokens
        self.flops += tokens * base_params * (6 if backward else 2)
