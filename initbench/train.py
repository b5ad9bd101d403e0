"""The training loop: exactly ``budget.steps`` optimizer steps over seeded batches.

Reads top to bottom: optimizer and schedule over whatever requires a gradient,
then forward, backward, clip, step, log -- stopping early only if the loss
stops being finite (the run is then recorded as diverged).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from initbench.budget import Budget, Spend
from initbench.data import batches


@dataclass
class TrainResult:
    status: str = "ok"  # ok | diverged
    seconds: float = 0.0
    curve: list[dict[str, float]] = field(default_factory=list)  # step, loss, lr, tokens


def build_optimizer(params: list[torch.nn.Parameter], budget: Budget, lr: float) -> torch.optim.Optimizer:
    spec = budget.optimizer
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=tuple(spec.betas), eps=spec.eps, weight_decay=spec.weight_decay)


def train(
    model: torch.nn.Module,
    examples: list[dict[str, list[int]]],
    budget: Budget,
    *,
    lr: float,
    seed: int,
    pad_id: int,
    device: torch.device,
    spend: Spend,
    base_params: int,
    label: str = "",
    optimizer: torch.optim.Optimizer | None = None,
) -> TrainResult:
    """Train ``model`` in place for the budget; ``optimizer`` overrides the suite's (LoRA+)."""
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    optimizer = optimizer or build_optimizer(params, budget, lr)
    warmup = int(budget.schedule.warmup_ratio * budget.steps)
    schedule = get_scheduler(budget.schedule.name, optimizer, num_warmup_steps=warmup, num_training_steps=budget.steps)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    result, start = TrainResult(), time.perf_counter()

    model.train()
    progress = tqdm(total=budget.steps, desc=label, unit="step", mininterval=1.0, leave=False)
    for step, batch in enumerate(batches(examples, budget.batch_size, budget.steps, seed, pad_id), start=1):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        if budget.optimizer.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, budget.optimizer.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)

        loss_value, tokens = loss.item(), int(batch["attention_mask"].sum())
        spend.add_training_step(tokens, base_params, trainable)
        result.curve.append({"step": step, "loss": loss_value, "lr": schedule.get_last_lr()[0], "tokens": tokens})
        progress.update(1)
        progress.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
        if not math.isfinite(loss_value):
            result.status = "diverged"
            break
    progress.close()
    model.eval()
    result.seconds = time.perf_counter() - start
    return result
