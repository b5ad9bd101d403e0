"""LoRA-SB and LoRA-XS: frozen A and B, only an r x r middle matrix R trains (``scale * B R A x``).

LoRA-SB -- Ponkshe et al., "Initialization using update approximation is a silver bullet for
extreme efficient low-rank fine-tuning", arXiv:2411.19557.  Code: https://github.com/RaghavSinghal10/lora-sb
(``utils/gradient_utils.py: estimate_and_process_grads_torch``, ``utils/svd_utils.py: get_svd_grad``,
``utils/initialization_utils.py: find_and_initialize_grad``, ``train_arithmetic.py``).  Written here.

Per layer, W of shape (out, in), G_b the full-weight gradient of calibration batch b:
    eff_lr = lr / (warmup_ratio * steps)                     (the first step's rate under linear warmup)
    dW     = -eff_lr * sign(sum_b G_b)                       (a simulated first signSGD/Adam step)
    U, S, V = torch.svd_lowrank(dW^T, q=r, niter=10)         (dW^T ~ U diag(S) V^T, U: (in, r), V: (out, r))
    B = V (out, r), A = U^T (r, in) -- both frozen;  R = diag(S) (r, r), dense, the only trainable tensor
    alpha = r (scale 1);  the base weight is NOT offset.
So ``scale * B R A = dW_r``, the best rank-r approximation of the simulated step: the model starts at
about W + dW_r, not at the base model (by design).  Trainable parameters: r*r per layer.
The reference's names: ``final_enc = U`` goes to ``lora_A.weight = U^T``, ``final_dec = V^T`` to
``lora_B.weight = V``, ``default_lora_latent_mapping.weight = diag(S)``.

Where this differs from the reference, and why:
  * sign(sum_b G_b) is taken from ``ctx.calibration.weight_gradients()`` (the mean over batches has
    the same sign as the sum); the reference runs 50 single examples, this run's calibration
    allowance in batches (every pass charged to the budget).
  * lr, warmup_ratio and steps come from the suite's budget (``ctx.budget``; lr is the run's own
    rate, ``ctx.lr``, so a tuning trial simulates its own first step).  With ``warmup_ratio = 0``
    (no warmup, the first step runs at the full rate) eff_lr = lr: the documented fallback.
  * the reference seeds torch's RNG with 42 before ``svd_lowrank``; here it is seeded from the run's
    generator, and the SVD runs in float32 (the reference casts U, S, V to bfloat16).

LoRA-XS -- Balazy et al., "LoRA-XS: Low-Rank Adaptation with Extremely Small Number of Parameters",
arXiv:2405.17604.  Code: https://github.com/MohammadrezaBanaei/LoRA-XS (``utils/initialization_utils.py:
find_and_initialize``, ``utils/svd_utils.py``).  Written here.  The same shape, from the weight's own
top-r SVD.  The reference runs sklearn's ``TruncatedSVD`` on W^T: ``transform`` gives U_r Sigma_r of W^T
(``final_enc``), ``components_`` gives V_r^T of W^T (``final_dec``); with W = U S V^T that is
    B = lora_B.weight = U_r (out, r)   (W's top-r left singular vectors),  frozen
    A = lora_A.weight = diag(S_r) V_r^T (r, in) (singular values folded into A), frozen
    R ~ N(0, sigma^2), sigma = 1e-5 (``init_module_weights(latent, sigma=0.00001)``), the only trainable tensor.
The base weight is not offset; with R ~ 1e-5 the model starts at the base model up to that noise.
Differences: the SVD here is exact (``torch.linalg.svd``) where the reference uses randomized
``TruncatedSVD(n_iter=10, random_state=42)``: the same subspace, up to signs; R is drawn from the run's
generator.  Alpha: the reference's scripts pass lora_alpha (16 in the commonsense script), which
matters little with R ~ 0; this method takes the suite's alpha.
"""

from __future__ import annotations

import torch

from initbench.adapters import freeze, insert_middle
from initbench.api import InitContext, InitError, InitMethod, active_adapter
from initbench_baselines.lora_ga import seeded_torch_rng


def effective_lr(lr: float, warmup_ratio: float, steps: int) -> float:
    """LoRA-SB's eff_lr = lr / (warmup_ratio * steps); lr itself when there is no warmup."""
    warmup_steps = warmup_ratio * steps
    return lr / warmup_steps if warmup_steps > 0 else lr


def lora_sb_factors(grad_sum: torch.Tensor, rank: int, eff_lr: float, niter: int = 10
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A (r, in), B (out, r), R (r, r)) of LoRA-SB from the summed (or mean) gradient (out, in).
    Draws from torch's global RNG (``torch.svd_lowrank``); seed it first."""
    if rank > min(grad_sum.shape):
        raise InitError(f"LoRA-SB needs r <= min(out, in); r={rank}, shape {tuple(grad_sum.shape)}")
    dW = -eff_lr * torch.sign(grad_sum.float())
    U, S, V = torch.svd_lowrank(dW.T, q=rank, niter=niter)
    return U.T.contiguous(), V.contiguous(), torch.diag(S)


def lora_xs_factors(weight: torch.Tensor, rank: int, generator: torch.Generator, sigma: float = 1e-5
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A (r, in), B (out, r), R (r, r)) of LoRA-XS for one (out, in) weight."""
    U, S, Vh = torch.linalg.svd(weight.float(), full_matrices=False)
    A = S[:rank, None] * Vh[:rank]
    B = U[:, :rank]
    R = torch.randn(rank, rank, generator=generator) * sigma
    return A.contiguous(), B.contiguous(), R


class LoRASB(InitMethod):
    summary = "LoRA-SB: A, B frozen from the SVD of a simulated first step -lr*sign(G); only r x r R trains."
    paper = "Ponkshe et al. 2024, arXiv:2411.19557"
    code = "https://github.com/RaghavSinghal10/lora-sb (find_and_initialize_grad); written here"
    peft_init = True
    niter = 10

    def default_alpha(self, rank: int) -> float:
        return float(rank)

    def initialize(self, model: torch.nn.Module, ctx: InitContext) -> None:
        if ctx.budget is None or ctx.lr is None:
            raise InitError("LoRA-SB needs the run's budget and learning rate (ctx.budget, ctx.lr)")
        eff_lr = effective_lr(ctx.lr, ctx.budget.schedule.warmup_ratio, ctx.budget.steps)
        grads = ctx.calibration.weight_gradients()
        with seeded_torch_rng(ctx.generator):
            for name, layer in ctx.lora_layers():
                A, B, R = lora_sb_factors(grads[name], layer.r[active_adapter(layer)], eff_lr, self.niter)
                ctx.set_lora(name, layer, A, B)
                insert_middle(layer, R)
                freeze(layer, "A")
                freeze(layer, "B")


class LoRAXS(InitMethod):
    summary = "LoRA-XS: B = U_r, A = S_r V_r^T of W frozen; only r x r R ~ N(0, 1e-10) trains."
    paper = "Balazy et al. 2024, arXiv:2405.17604"
    code = "https://github.com/MohammadrezaBanaei/LoRA-XS (find_and_initialize); written here"
    peft_init = True
    sigma = 1e-5

    def initialize(self, model: torch.nn.Module, ctx: InitContext) -> None:
        for name, layer in ctx.lora_layers():
            rank = layer.r[active_adapter(layer)]
            weight = ctx.base_weight(layer)
            if rank > min(weight.shape):
                raise InitError(f"LoRA-XS needs r <= min(out, in) = {min(weight.shape)}, got {rank}")
            A, B, R = lora_xs_factors(weight, rank, ctx.generator, self.sigma)
            ctx.set_lora(name, layer, A, B)
            insert_middle(layer, R)
            freeze(layer, "A")
            freeze(layer, "B")
