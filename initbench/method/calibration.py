"""Budgeted calibration statistics for data-driven inits (LoRA-GA, EVA, CorDA, ...).

Every statistic runs the *base* model (adapters disabled) on batches drawn
from the suite's training split with the run's seed, and every example-pass is
charged to the run's ``Spend``; asking for more than the suite's allowance
raises ``BudgetExceeded``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from initbench.inputs.data import collate
from initbench.method.adapters import lora_layers
from initbench.spec.budget import BudgetExceeded, CalibrationSpec, Spend


class Calibrator:
    """Hands out calibration batches and the statistics computed from them."""

    def __init__(
        self,
        model: torch.nn.Module,
        examples: list[dict[str, list[int]]],
        allowance: CalibrationSpec,
        spend: Spend,
        base_params: int,
        seed: int,
        pad_id: int,
        device: torch.device,
        tokenizer: Any = None,
        max_length: int | None = None,
    ):
        self.model = model
        self.allowance = allowance
        self.spend = spend
        self.base_params = base_params
        self.device = device
        self.pad_id = pad_id
        self.tokenizer = tokenizer
        self.max_length = max_length
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed + 7919)).tolist()
        self.examples = [examples[i] for i in order[: allowance.examples]]

    @property
    def remaining(self) -> int:
        return self.allowance.examples - self.spend.calibration_examples

    def batches(
        self, examples: int | None = None, backward: bool = False, batch_size: int | None = None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Yield batches covering ``examples`` (default: the whole allowance) of ``batch_size``
        (default: the suite's ``budget.calibration.batch_size``; a method whose reference batches
        differently passes its own), charging each one.  Asking for more examples than the training
        split holds cycles through it again (every pass is charged), as ``itertools.cycle`` would."""
        examples = self.allowance.examples if examples is None else examples
        self._check(examples)
        cycled = (self.examples[i % len(self.examples)] for i in range(examples))
        yield from self._charged(cycled, examples, backward, batch_size)

    def encode(
        self, prompts: Sequence[str | list[int]], backward: bool = False, batch_size: int | None = None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of data of the method's own (not the task's: CorDA-KPM's knowledge windows), charged
        as ``batches`` charges the task's: each prompt is a text, encoded by the run's tokenizer as its
        ``__call__`` encodes it (special tokens included), or a list of token ids, and is cut to the
        suite's ``budget.max_length`` tokens; batches of ``batch_size`` (default the suite's
        ``budget.calibration.batch_size``) right-padded as the task's, with ``labels`` equal to
        ``input_ids`` on every token, on the model's device.  More prompts than ``remaining`` raise
        ``BudgetExceeded`` before any is encoded."""
        self._check(len(prompts))
        if any(isinstance(p, str) for p in prompts) and self.tokenizer is None:
            raise ValueError("calibration.encode was given text but this calibrator has no tokenizer")

        def encoded():
            for prompt in prompts:
                ids = self.tokenizer(prompt)["input_ids"] if isinstance(prompt, str) else list(prompt)
                ids = ids if self.max_length is None else ids[: self.max_length]
                if not ids:
                    raise ValueError("calibration.encode was given an empty prompt")
                yield {"input_ids": ids, "labels": ids}

        yield from self._charged(encoded(), len(prompts), backward, batch_size)

    def _check(self, examples: int) -> None:
        """Raise ``BudgetExceeded`` unless ``examples`` more example-passes fit in what remains."""
        if examples > self.remaining:
            raise BudgetExceeded(
                f"calibration asked for {examples} examples but only {self.remaining} of the suite's "
                f"{self.allowance.examples} remain (budget.calibration.examples)"
            )

    def _charged(
        self, examples: Iterable[dict[str, list[int]]], count: int, backward: bool, batch_size: int | None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Collate ``count`` tokenized examples into batches on the model's device, charging each batch."""
        size = batch_size or self.allowance.batch_size
        examples = iter(examples)
        for start in range(0, count, size):
            chunk = [next(examples) for _ in range(start, min(start + size, count))]
            batch = {k: v.to(self.device) for k, v in collate(chunk, self.pad_id).items()}
            self.spend.add_calibration_batch(len(chunk), int(batch["attention_mask"].sum()), self.base_params, backward)
            yield batch

    def charge(self, examples: int, tokens: int, backward: bool = False) -> None:
        """Charge one pass over ``examples`` examples and ``tokens`` tokens the method ran on its own, as
        ``batches`` charges its own (``encode`` charges data of the method's own by itself: prefer it)."""
        self._check(examples)
        self.spend.add_calibration_batch(examples, tokens, self.base_params, backward)

    def layer_inputs(self, examples: int | None = None, labels_only: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        """Per batch, the inputs of every LoRA layer's base layer at non-padding tokens (with
        ``labels_only``, only at the tokens that have a label: the completion, as EVA's label mask), as
        float32 (tokens, in_features) tensors keyed by layer name, in the order the forward reaches them."""
        layers = lora_layers(self.model)
        for batch in self.batches(examples):
            captured: dict[str, torch.Tensor] = {}
            mask = batch["attention_mask"].bool()
            if labels_only:
                mask &= batch["labels"] != -100

            def hook(name: str, into: dict[str, torch.Tensor], mask: torch.Tensor):
                def capture(_module, args, _output):
                    into[name] = args[0].detach()[mask].to(torch.float32)

                return capture

            handles = [
                layer.get_base_layer().register_forward_hook(hook(name, captured, mask)) for name, layer in layers
            ]
            try:
                with torch.no_grad(), self.model.disable_adapter():
                    self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            finally:
                for handle in handles:
                    handle.remove()
            yield captured

    def activation_covariance(self, examples: int | None = None) -> dict[str, torch.Tensor]:
        """Per LoRA layer, E[x x^T] of its input over all non-padding calibration tokens."""
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for captured in self.layer_inputs(examples):
            for name, x in captured.items():
                sums[name] = sums.get(name, 0) + x.T @ x
            count += next(iter(captured.values())).shape[0] if captured else 0
        return {name: total / max(count, 1) for name, total in sums.items()}

    def weight_gradients(self, examples: int | None = None) -> dict[str, torch.Tensor]:
        """Per LoRA layer, the gradient of the training loss w.r.t. the full base weight,
        averaged over the calibration batches, as float32 (out_features, in_features)."""
        return self._weight_gradient_moment(examples, power=1)

    def weight_gradient_squares(self, examples: int | None = None) -> dict[str, torch.Tensor]:
        """Per LoRA layer, the element-wise square of each batch's full-weight gradient, averaged over
        the calibration batches (the empirical diagonal Fisher of the weight at batch granularity:
        (1/n) sum_b (dL_b/dW)^2, L_b the batch's mean token loss), as float32 (out_features, in_features).
        Charged like ``weight_gradients`` (one forward and one backward pass per batch)."""
        return self._weight_gradient_moment(examples, power=2)

    def _weight_gradient_moment(self, examples: int | None, power: int) -> dict[str, torch.Tensor]:
        total: dict[str, torch.Tensor] = {}
        n_batches = 0
        for _, grads in self.batch_weight_gradients(examples):
            for name, grad in grads.items():
                total[name] = total.get(name, 0) + (grad if power == 1 else grad * grad)
            n_batches += 1
        return {name: value / max(n_batches, 1) for name, value in total.items()}

    def batch_weight_gradients(
        self, examples: int | None = None, batch_size: int | None = None
    ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """Per calibration batch (of ``batch_size``, default the suite's): its number of examples and,
        per LoRA layer, the gradient of the batch's mean token loss w.r.t. the full base weight, as
        float32 (out_features, in_features).  Each batch is charged one forward and one backward pass.
        For methods whose reference combines batches its own way (LoRA-SB: sum_b G_b / n_b)."""
        layers = lora_layers(self.model)
        weights = {name: layer.get_base_layer().weight for name, layer in layers}
        transposed = {name for name, layer in layers if getattr(layer, "fan_in_fan_out", False)}
        for weight in weights.values():
            weight.requires_grad_(True)
        try:
            with self.model.disable_adapter():
                for batch in self.batches(examples, backward=True, batch_size=batch_size):
                    self.model(**batch).loss.backward()
                    grads = {}
                    for name, weight in weights.items():
                        grad = weight.grad.to(torch.float32)
                        grads[name] = grad.T.contiguous() if name in transposed else grad
                        weight.grad = None
                    yield len(batch["input_ids"]), grads
        finally:
            for weight in weights.values():
                weight.requires_grad_(False)
                weight.grad = None
            self.model.zero_grad(set_to_none=True)
