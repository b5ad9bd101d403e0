"""The training loop: exactly ``budget.steps`` optimizer steps over seeded batches.

Reads top to bottom: optimizer and schedule over whatever requires a gradient,
then forward, backward, clip, step, log -- stopping early only if the loss
stops being finite (the run is then recorded as diverged).

The fast path (``INITBENCH_FAST=1``, recorded in the results' ``execution`` column) computes
the same loss without the ``(batch, seq, vocab)`` logits: the output head runs only at the
positions whose next token is labelled (the completion; prompt and padding are not), and
AdamW is the fused kernel on CUDA.  The loss is the same quantity (mean float32 cross-entropy
over labelled positions); only summation order differs, so values agree with the plain path to
float32 rounding, not bit for bit (``tests/test_train.py`` states the tolerance).

Precision (``bf16-autocast`` or ``float32``) and ``torch.compile`` of the loss are chosen by
``initbench.run.execution`` and recorded in the same column.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from initbench.inputs.data import batches
from initbench.run import execution
from initbench.spec.budget import Budget, Spend


@dataclass
class TrainResult:
    status: str = "ok"  # ok | diverged
    seconds: float = 0.0
    curve: list[dict[str, float]] = field(default_factory=list)  # step, loss, lr, tokens
    execution: dict[str, object] = field(default_factory=dict)  # execution_settings of the loop that ran


def build_optimizer(params: list[torch.nn.Parameter], budget: Budget, lr: float) -> torch.optim.Optimizer:
    spec = budget.optimizer
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=spec.weight_decay)
    fused = execution.fast_path() and all(p.is_cuda for p in params) or None
    return torch.optim.AdamW(
        params, lr=lr, betas=tuple(spec.betas), eps=spec.eps, weight_decay=spec.weight_decay, fused=fused
    )


def labelled_positions_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Causal-LM loss with the output head applied only where the next token is labelled: the
    mean float32 cross-entropy over labelled positions, as ``model(**batch).loss``, without
    materializing logits for the prompt and padding.  Falls back to the model's own loss for
    heads that do more than a projection (logit soft-capping or scaling)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(inner, "config", None)
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return model(**batch).loss
    hidden = inner.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = inner.get_output_embeddings()(hidden[:, :-1][keep]).float()
    return torch.nn.functional.cross_entropy(logits, targets[keep])


def _model_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


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
    autocast = execution.autocast(device)
    compute_loss = labelled_positions_loss if execution.fast_path() else _model_loss
    if execution.compile_enabled():
        compute_loss = torch.compile(compute_loss)
    result, start = TrainResult(execution=execution.execution_settings(device, optimizer)), time.perf_counter()

    model.train()
    progress = tqdm(total=budget.steps, desc=label, unit="step", mininterval=1.0, leave=False)
    stream = batches(examples, budget.batch_size, budget.steps, seed, pad_id)
    for step in range(1, budget.steps + 1):  # exactly the budget's steps; a diverged run stops early
        batch = {k: v.to(device) for k, v in next(stream).items()}
        with autocast:
            loss = compute_loss(model, batch)
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
