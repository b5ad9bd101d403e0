"""Forgetting: how far a trained model's next-token distribution moved from the *base* model's on
general text outside the task.

The measure is the mean per-token KL divergence ``KL(p_base || p_trained)`` over the non-padding
positions of a fixed held set (every position predicts the token after it; both distributions are
taken at the same position, so there is no shift between them).  The base side is computed from the
untouched base model *before* any adapter is attached: after a residual init (PiSSA, LoRA-GA, CorDA)
or full fine-tuning, disabling the adapter does not give the base model back, so "adapter off" is
not a valid "before".  Computed in float32 with autocast off.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from initbench.inputs.data import collate
from initbench.inputs.datasets_io import DataUnavailable, data_dir, nq_open_questions
from initbench.inputs.models import LoadedModel
from initbench.method.api import InitMethod
from initbench.run.lending import model_key
from initbench.spec.suite import Suite


@dataclass(frozen=True)
class HeldSet:
    """A tokenized held-out text set and the base model's next-token log-probabilities on it."""

    name: str  # what the texts are (source, count, content hash): recorded beside every value
    batches: list[dict[str, torch.Tensor]]  # input_ids, attention_mask
    base_log_probs: list[torch.Tensor]  # per batch: (batch, seq, vocab) float32


def tokenize_texts(texts: Sequence[str], tokenizer, max_length: int, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Right-padded batches of ``texts`` (truncated to ``max_length`` tokens), in order."""
    examples = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"][:max_length]
        if len(ids) >= 2:  # a single token predicts nothing
            examples.append({"input_ids": ids, "labels": ids})
    if not examples:
        raise ValueError("forgetting: the held set has no text of two tokens or more")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad)
        out.append({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    return out


@torch.no_grad()
def next_token_log_probs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """float32 log-softmax of the model's logits on ``batch`` (eval mode, autocast off)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(device.type, enabled=False):
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
    finally:
        model.train(was_training)
    return torch.log_softmax(logits.float(), dim=-1).cpu()


def held_set(
    name: str,
    texts: Sequence[str],
    base_model: torch.nn.Module,
    tokenizer,
    *,
    max_length: int = 64,
    batch_size: int = 16,
) -> HeldSet:
    """Tokenize ``texts`` and record the base model's log-probabilities on them (call before attaching)."""
    batches = tokenize_texts(texts, tokenizer, max_length, batch_size)
    return HeldSet(name, batches, [next_token_log_probs(base_model, b) for b in batches])


def mean_token_kl(model: torch.nn.Module, held: HeldSet) -> float:
    """Mean over the held set's non-padding positions of ``KL(p_base || p_model)``, in nats."""
    total, count = 0.0, 0
    for batch, base in zip(held.batches, held.base_log_probs):
        trained = next_token_log_probs(model, batch)
        kl = (base.exp() * (base - trained)).sum(-1)  # (batch, seq)
        mask = batch["attention_mask"].bool()
        total += float(kl[mask].double().sum())
        count += int(mask.sum())
    return total / count


#: how many NQ-open questions (first in file order) make the held set
HELD_QUESTIONS = 64
_HELD: dict[str, HeldSet] = {}  # per process: the base model's held set, by base-model key
_UNAVAILABLE: list[Exception] = []  # the held text could not be read in this process (tried once)


def general_text() -> tuple[list[str], str]:
    """The held set's texts, general-knowledge questions outside every task: the first
    ``HELD_QUESTIONS`` questions of NQ-open's dev split (local copy under the data directory, else the
    hub's ``validation`` split, the same questions), and its name with a content hash."""
    questions, source = nq_open_questions("validation", "forgetting")
    texts = questions[:HELD_QUESTIONS]
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    return texts, f"nq_open {source} first {len(texts)} questions sha256:{digest}"


def base_held_set(model_key: str, base_model: torch.nn.Module, tokenizer) -> HeldSet:
    """The held set with the base model's log-probabilities, computed once per process and base model
    (``model_key``); call with the untouched base model, before any adapter is attached."""
    if _UNAVAILABLE:
        raise _UNAVAILABLE[0]
    if model_key not in _HELD:
        try:
            texts, name = general_text()
        except Exception as err:  # offline without a data directory: not retried for every run
            _UNAVAILABLE.append(err)
            raise
        _HELD[model_key] = held_set(name, texts, base_model, tokenizer)
    return _HELD[model_key]


def run_held_set(
    suite: Suite, method: InitMethod, split: str, loaded: LoadedModel, device: torch.device
) -> HeldSet | None:
    """The held set of one run, taken from the base model as loaded (before anything is attached),
    for a final run of a method that trains; None for trials and ``base``, and when the held text
    cannot be read here: the run goes on and its forgetting is null.  The hub is asked only by suites
    whose model comes from the hub (online users); an offline suite (embedded or tiny model) without a
    data directory skips it rather than wait for the hub to time out."""
    if split != "test" or not method.trains:
        return None
    if data_dir()[0] is None and suite.model.source != "hub":  # an offline suite: never wait on the hub
        _warn_once(
            "forgetting not measured: no data directory; pass --data-dir (or set INITBENCH_DATA_DIR) "
            "to a folder holding nq_open/NQ-open.dev.jsonl"
        )
        return None
    try:
        return base_held_set(model_key(suite, device), loaded.model, loaded.tokenizer)
    except DataUnavailable as err:
        _warn_once(f"forgetting not measured: {err}")
        return None


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"initbench: {message}", file=sys.stderr)
