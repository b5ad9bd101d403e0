"""LoRA-SB and LoRA-XS: frozen A and B, only an r x r middle matrix R trains (``scale * B R A x``).

LoRA-SB -- Ponkshe et al., "Initialization using update approximation is a silver bullet for
extreme efficient low-rank fine-tuning", arXiv:2411.19557.  Code: https://github.com/RaghavSinghal10/lora-sb
at commit 37b33d4 (``utils/gradient_utils.py: estimate_and_process_grads_torch``, lines 104 and 141;
``utils/svd_utils.py: get_svd_grad``, lines 24-29; ``utils/initialization_utils.py:
find_and_initialize_grad``; ``train_arithmetic.py`` lines 95-104, ``train_cr.py`` lines 99-107,
``train_glue.py`` lines 101-108).  Written here.

Per layer, W of shape (out, in), G_b the full-weight gradient of gradient-estimation batch b (its mean
token loss), n_b its number of examples:
    eff_lr = lr / (warmup_ratio * len(train_loader) * epochs)   (the reference scripts' formula)
    dW     = -eff_lr * sign(sum_b G_b / n_b)                    (a simulated first signSGD/Adam step)
    U, S, V = torch.svd_lowrank(dW^T, q=r, niter=10)            (dW^T ~ U diag(S) V^T, U: (in, r), V: (out, r))
    B = V (out, r), A = U^T (r, in) -- both frozen;  R = diag(S) (r, r), dense, the only trainable tensor
    alpha = r (scale 1);  the base weight is NOT offset.
So ``scale * B R A = dW_r``, the best rank-r approximation of the simulated step: the model starts at
about W + dW_r, not at the base model (by design).  Trainable parameters: r*r per layer.
The reference's names: ``final_enc = U`` goes to ``lora_A.weight = U^T``, ``final_dec = V^T`` to
``lora_B.weight = V``, ``default_lora_latent_mapping.weight = diag(S)``.

The reference's terms and the initbench quantity each one maps to (:data:`GRADIENT_ESTIMATION` holds
the per-family settings, picked by the suite's ``family``; a suite without one gets ``math``'s):
  * ``args.lr`` -> the run's learning rate (``ctx.lr``: a tuning trial simulates its own first step);
  * ``args.warmup_ratio`` -> ``budget.schedule.warmup_ratio``;
  * ``train_loader`` -> the gradient-estimation loader over the training set, of batch ``eg_bs``
    (3 in ``train_arithmetic.py``, 10 in ``train_cr.py``; ``train_glue.py`` uses its training loader,
    batch ``args.batch_size``: here ``budget.batch_size``): batches of that size over the examples the
    budget trains on;
  * ``len(train_loader) * epochs`` -> ceil(steps * batch_size / eg_bs): ``steps * batch_size`` is the
    number of training examples the budget processes, the reference's ``len(dataset) * epochs``
    (``tasks/math.yaml``: ceil(1250 * 16 / 3) = 6,667 batches, eff_lr = 2e-4 / (0.03 * 6667) = 1.0e-6);
  * ``num_samples`` (50 math, 170 commonsense, 2 GLUE) -> the method's reference calibration amount
    (``reference_calibration_examples``): the run uses min(it, ``budget.calibration.examples``);
  * the gradient batches: every script runs ``estimate_and_process_grads_torch`` over that same loader,
    the first ``num_samples`` examples in its batches, ``(loss / n_b).backward()`` summed over batches
    (50 = 16 x 3 + 2 for math): here ``ctx.calibration.batch_weight_gradients(batch_size=...)`` over the
    run's calibration examples, every pass charged to the calibration budget.
With ``warmup_ratio = 0`` the reference divides by zero; here the first step's rate without warmup,
eff_lr = lr, is used (the documented fallback).

Differences from the reference, and why: the reference shuffles its loader with the script's seed 42
and seeds torch's RNG with 42 before ``svd_lowrank``; here the calibration examples are the run's
seeded draw and the SVD's RNG is seeded from the run's generator.  The SVD runs in float32 (the
reference casts U, S, V to bfloat16).

LoRA-XS -- Balazy et al., "LoRA-XS: Low-Rank Adaptation with Extremely Small Number of Parameters",
arXiv:2405.17604.  Code: https://github.com/MohammadrezaBanaei/LoRA-XS at commit e50b1a8
(``utils/initialization_utils.py: find_and_initialize``, lines 95-116; ``utils/svd_utils.py``, lines 6-18).
Written here.  The same shape, from the weight's own
top-r SVD.  The reference runs sklearn's ``TruncatedSVD`` on W^T: ``transform`` gives U_r Sigma_r of W^T
(``final_enc``), ``components_`` gives V_r^T of W^T (``final_dec``); with W = U S V^T that is
    B = lora_B.weight = U_r (out, r)   (W's top-r left singular vectors),  frozen
    A = lora_A.weight = diag(S_r) V_r^T (r, in) (singular values folded into A), frozen
    R ~ N(0, sigma^2), sigma = 1e-5 (``init_module_weights(latent, sigma=0.00001)``), the only trainable tensor.
The base weight is not offset; with R ~ 1e-5 the model starts at the base model up to that noise.
Alpha: the update is ``(alpha / r) * B R A``, so alpha scales R's effective learning rate (and
its gradient) directly; it is not negligible.  The paper's convention per task family
(:data:`LORA_XS_ALPHA`): alpha = r for math (``main_math_tuning.py`` line 136:
``lora_alpha=script_args.lora_r``), 2r for commonsense reasoning (``README.md`` lines 111-112: rank 32,
alpha 64), 16 for GLUE (``scripts/run_glue.py`` line 41).  The suite's ``family`` picks it; a
suite that declares no family keeps its own alpha (and ``lora.pin_alpha`` pins it for every method).
Differences: the SVD here is exact (``torch.linalg.svd``) where the reference uses randomized
``TruncatedSVD(n_iter=10, random_state=42)``: the same subspace, up to signs; R is drawn from the run's
generator.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from initbench.api import InitContext, InitError, LayerInit, LayerwiseInit


@dataclass(frozen=True)
class GradientEstimation:
    """One reference script's gradient-estimation settings (see the module docstring)."""

    examples: int  # num_samples
    batch_size: int | None  # eg_bs, the gradient-estimation loader's batch (None: the suite's training batch)
    script: str


GRADIENT_ESTIMATION = {
    "math": GradientEstimation(50, 3, "train_arithmetic.py"),
    "commonsense": GradientEstimation(170, 10, "train_cr.py"),
    "glue": GradientEstimation(2, None, "train_glue.py"),
}
LORA_XS_ALPHA = {"math": lambda r: float(r), "commonsense": lambda r: 2.0 * r, "glue": lambda r: 16.0}


def gradient_estimation(family: str) -> GradientEstimation:
    """The reference's settings for a suite's task family (``math``'s for a suite that declares none)."""
    return GRADIENT_ESTIMATION.get(family, GRADIENT_ESTIMATION["math"])


def effective_lr(lr: float, warmup_ratio: float, train_examples: int, loader_batch_size: int) -> float:
    """LoRA-SB's eff_lr = lr / (warmup_ratio * len(train_loader) * epochs), with len(train_loader) *
    epochs = ceil(train_examples / loader_batch_size); lr itself when there is no warmup."""
    loader_batches = math.ceil(train_examples / loader_batch_size)
    return lr / (warmup_ratio * loader_batches) if warmup_ratio > 0 else lr


def summed_batch_gradients(batches: Iterable[tuple[int, dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """sum_b G_b / n_b over (n_b, {layer: G_b}) batches: the reference's ``(loss / n).backward()`` summed."""
    total: dict[str, torch.Tensor] = {}
    for n, grads in batches:
        for name, grad in grads.items():
            total[name] = total.get(name, 0) + grad / n
    return total


def lora_sb_factors(
    grad_sum: torch.Tensor, rank: int, eff_lr: float, niter: int = 10
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A (r, in), B (out, r), R (r, r)) of LoRA-SB from the summed (or mean) gradient (out, in).
    Draws from torch's global RNG (``torch.svd_lowrank``); seed it first."""
    return lora_sb_step_factors(simulated_step(grad_sum, eff_lr), rank, niter)


def simulated_step(grad_sum: torch.Tensor, eff_lr: float) -> torch.Tensor:
    """LoRA-SB's simulated first update dW = -eff_lr * sign(grad_sum), float32 (out, in)."""
    return -eff_lr * torch.sign(grad_sum.float())


def lora_sb_step_factors(
    step: torch.Tensor, rank: int, niter: int = 10
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A (r, in), B (out, r), R (r, r)) of LoRA-SB from its simulated step dW (out, in): the rank-r
    randomized SVD of dW^T.  Draws from torch's global RNG (``torch.svd_lowrank``); seed it first."""
    if rank > min(step.shape):
        raise InitError(f"LoRA-SB needs r <= min(out, in); r={rank}, shape {tuple(step.shape)}")
    U, S, V = torch.svd_lowrank(step.T, q=rank, niter=niter)
    return U.T.contiguous(), V.contiguous(), torch.diag(S)


def lora_xs_factors(
    weight: torch.Tensor, rank: int, generator: torch.Generator, sigma: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A (r, in), B (out, r), R (r, r)) of LoRA-XS for one (out, in) weight."""
    U, S, Vh = torch.linalg.svd(weight.float(), full_matrices=False)
    A = S[:rank, None] * Vh[:rank]
    B = U[:, :rank]
    R = torch.randn(rank, rank, generator=generator) * sigma
    return A.contiguous(), B.contiguous(), R


class LoRASB(LayerwiseInit):
    summary = "LoRA-SB: A, B frozen from the SVD of a simulated first step -lr*sign(G); only r x r R trains."
    paper = "Ponkshe et al. 2024, arXiv:2411.19557"
    code = "https://github.com/RaghavSinghal10/lora-sb (find_and_initialize_grad); written here"
    peft_init = True
    niter = 10
    trained_parts = ("M",)
    seed_torch_rng = True  # torch.svd_lowrank draws from torch's RNG, seeded from the run's generator

    def default_alpha(self, rank: int) -> float:
        return float(rank)

    def reference_calibration_examples(self, family: str) -> int:
        return gradient_estimation(family).examples

    def statistics(self, ctx: InitContext) -> dict[str, torch.Tensor]:
        """Per layer, the simulated first step dW = -eff_lr sign(sum_b G_b / n_b) over the reference's
        gradient-estimation batches (reads ``ctx.lr``: the init depends on the run's rate)."""
        reference = gradient_estimation(ctx.family)
        budget = ctx.budget
        batch_size = reference.batch_size or budget.batch_size
        eff_lr = effective_lr(ctx.lr, budget.schedule.warmup_ratio, budget.steps * budget.batch_size, batch_size)
        steps = summed_batch_gradients(ctx.calibration.batch_weight_gradients(batch_size=batch_size))
        ctx.info.update(lora_sb_eff_lr=eff_lr, lora_sb_reference=reference.script)
        for name in steps:  # in place: one layer's gradient freed as its step is made
            steps[name] = simulated_step(steps[name], eff_lr)
        return steps

    def init_layer(self, weight, rank, scale, stats, generator):
        A, B, R = lora_sb_step_factors(stats, rank, self.niter)
        return LayerInit(A, B, middle=R)


class LoRAXS(LayerwiseInit):
    summary = "LoRA-XS: B = U_r, A = S_r V_r^T of W frozen; only r x r R ~ N(0, 1e-10) trains; alpha per family."
    paper = "Balazy et al. 2024, arXiv:2405.17604"
    code = "https://github.com/MohammadrezaBanaei/LoRA-XS (find_and_initialize); written here"
    peft_init = True
    sigma = 1e-5
    trained_parts = ("M",)

    def paper_alpha(self, rank: int, family: str) -> float | None:
        """The paper's alpha for the suite's task family (:data:`LORA_XS_ALPHA`); the suite's without one."""
        rule = LORA_XS_ALPHA.get(family)
        return None if rule is None else rule(rank)

    def init_layer(self, weight, rank, scale, stats, generator):
        if rank > min(weight.shape):
            raise InitError(f"LoRA-XS needs r <= min(out, in) = {min(weight.shape)}, got {rank}")
        A, B, R = lora_xs_factors(weight, rank, generator, self.sigma)
        return LayerInit(A, B, middle=R)
