"""Training throughput: tokens per second, model FLOPs and model FLOPs utilisation (MFU).

**Model FLOPs** of one optimizer step follow the dense-transformer rule ``initbench.spec.budget.Spend``
uses, per token: ``2N`` forward, ``2N`` for the activation gradients, and ``6n`` for the ``n``
trainable parameters (their forward, activation and weight gradients), ``N`` being the parameters
in matrix multiplies; so a LoRA step costs ``4N + 6n`` per token and full fine-tuning ``6N``
(``n = N``).  Attention's score and value products (``12 * layers * seq_len * d_model`` per token
for forward and backward) are left out, as the kernels of the padded short sequences initbench
trains on do not run them densely; at long sequences MFU computed here is a lower bound.

**MFU** = ``train_flops / train_seconds / peak``, ``peak`` being the device's dense bf16 peak in
FLOP/s from :data:`PEAK_BF16_FLOPS` (vendor datasheets, without sparsity), or
``$INITBENCH_PEAK_FLOPS`` where set; unknown devices (and CPUs) get no MFU.
"""

from __future__ import annotations

import os

#: dense bf16 tensor-core peak in FLOP/s, matched against ``torch.cuda.get_device_name()``; the first
#: key contained in the name wins, so more specific names come first
PEAK_BF16_FLOPS: dict[str, float] = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989.4e12,  # SXM5 (HBM3)
    "H200": 989.4e12,
    "GH200": 989.4e12,
    "B200": 2250e12,
    "A100": 312e12,
    "L40S": 362.05e12,
    "L4": 121e12,
    "A10G": 70e12,
    "RTX 4090": 165.2e12,
}
ENV = "INITBENCH_PEAK_FLOPS"


def peak_flops(device_type: str, device_name: str) -> float | None:
    """The dense bf16 peak of the device in FLOP/s, or None where unknown (every CPU)."""
    if os.environ.get(ENV):
        return float(os.environ[ENV])
    if device_type != "cuda":
        return None
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in device_name), None)


def training_throughput(
    train_flops: float, train_tokens: int, train_seconds: float, device_type: str, device_name: str
) -> dict[str, float | None]:
    """The schema-4 throughput columns of one run's training phase."""
    peak = peak_flops(device_type, device_name)
    rate = train_flops / train_seconds if train_seconds > 0 else None
    return {
        "train_flops": train_flops,
        "train_tokens_per_second": train_tokens / train_seconds if train_seconds > 0 else None,
        "device_peak_flops": peak,
        "mfu": rate / peak if rate is not None and peak else None,
    }
