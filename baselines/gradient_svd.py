"""LoRA-One and FWSVD (Fisher-weighted SVD): A and B from calibration gradients.

LoRA-One -- Zhang et al., "LoRA-One: One-Step Full Gradient Could Suffice for Fine-Tuning Large
Language Models, Provably and Efficiently", ICML 2025, arXiv:2502.01235.  Code:
https://github.com/YuanheZ/LoRA-One (``run_exp.py``: ``estimate_gradient`` lines 363-393,
``reinit_lora_modules`` lines 163-212 with ``init.mode = gradient``, ``direction = LoRA-One``,
``scale = stable``; ``conf/init/gradient.yaml``: stable_gamma 128; README: rsLoRA, alpha 16).
Written here.  Per layer W (out, in):
    G = mean over calibration batches of dL/dW             (``ctx.calibration.weight_gradients()``)
    U, S, V = torch.svd_lowrank(-G, q=min(512, min(out, in)), niter=16)
    B = U_r diag(sqrt(S_r)) / sqrt(S_1),   A = diag(sqrt(S_r)) V_r^T / sqrt(S_1)
    B <- B / sqrt(gamma),  A <- A / sqrt(gamma),   gamma = 128
no offset of the base weight: the model starts at W + scale * B A, i.e. moved along -G (by design).
rsLoRA with alpha = 16 (scale 16 / sqrt(r)).  The README's formula omits the 1/sqrt(S_1); the code
divides by it, and so does this.  Differences: q = 512 is capped by the shape (``svd_lowrank`` needs
q <= min(out, in)); the randomized SVD draws from torch's RNG seeded from the run's generator.

FWSVD (``fwsvd``; registered before as ``fisher-svd``, which stays as an alias) -- the Fisher-weighted
SVD of Hsu et al., "Language model compression with weighted low-rank factorization", ICLR 2022,
arXiv:2207.00112, used here as the benchmark's Fisher-weighted LoRA init.  Written here (FWSVD
publishes no LoRA-init code).  Per layer W (out, in):
    F = (1/n) sum_b (dL_b/dW)^2      element-wise, L_b the mean token loss of calibration batch b
                                     (``ctx.calibration.weight_gradient_squares()``: the empirical
                                     diagonal Fisher at batch granularity, not per example)
    d_i = sqrt(sum_j F_ij)           one weight per row (output unit) of W, floored at 1e-6 max(d)
    diag(d) W = U S V^T              (exact SVD)
    B = diag(1/d) U_r diag(sqrt(S_r / scale)),  A = diag(sqrt(S_r / scale)) V_r^T
    W <- W - scale * B A,   alpha = r (scale 1)
so the adapter holds the rank-r approximation of W that is best in the Fisher-weighted norm and the
model starts unchanged.

Not FILA.  LoKU's FILA (Cha et al., "Towards Robust and Parameter-Efficient Knowledge Unlearning for
LLMs", ICLR 2025, arXiv:2408.06621) starts from the same weighted factorization but differs in three
ways, none reproduced here: (1) its importance is a *relative* Fisher, that of a forget set over that
of a retain set (an unlearning objective; initbench has one training split, so the Fisher here is of
that split alone); (2) its Fisher is accumulated per token (token-weighted), ours per calibration
batch of mean token losses; (3) it factorizes with a randomized (low-rank) SVD, ours is exact.
"""

from __future__ import annotations

import torch

from initbench.api import InitError, LayerwiseInit


def lora_one_factors(
    grad: torch.Tensor, rank: int, gamma: float = 128.0, q: int = 512, niter: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (r, in), B (out, r)) of LoRA-One from the mean gradient (out, in).  Draws from torch's RNG."""
    q = min(q, min(grad.shape))
    if rank > q:
        raise InitError(f"LoRA-One needs r <= min(out, in); r={rank}, shape {tuple(grad.shape)}")
    U, S, V = torch.svd_lowrank(-grad.float(), q=q, niter=niter)
    root = torch.sqrt(S[:rank])
    B = U[:, :rank] * root / torch.sqrt(S[0])
    A = root[:, None] * V[:, :rank].T / torch.sqrt(S[0])
    return (A / gamma**0.5).contiguous(), (B / gamma**0.5).contiguous()


def fwsvd_factors(
    weight: torch.Tensor, fisher: torch.Tensor, rank: int, scale: float, floor: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, B, residual) of FWSVD (rows weighted by sqrt of the row-summed diagonal Fisher) for one (out, in) weight."""
    if rank > min(weight.shape):
        raise InitError(f"fwsvd needs r <= min(out, in) = {min(weight.shape)}, got {rank}")
    d = torch.sqrt(fisher.float().sum(dim=1))
    d = torch.clamp(d, min=float(d.max()) * floor if d.max() > 0 else 1.0)
    U, S, Vh = torch.linalg.svd(d[:, None] * weight.float(), full_matrices=False)
    root = torch.sqrt(S[:rank] / scale)
    B = (U[:, :rank] / d[:, None]) * root
    A = root[:, None] * Vh[:rank]
    return A.contiguous(), B.contiguous(), weight - scale * (B @ A)


class LoRAOne(LayerwiseInit):
    summary = "LoRA-One: SVD of -G, B = U_r sqrt(S_r)/sqrt(s1 gamma), A likewise; no offset; rsLoRA a=16."
    paper = "Zhang et al. 2025, arXiv:2502.01235"
    code = "https://github.com/YuanheZ/LoRA-One (run_exp.py, reinit_lora_modules); written here"
    peft_init = True
    calibration_reference = 8  # conf/init/gradient.yaml: bsz 1 x iters 8
    use_rslora = True
    gamma = 128.0
    statistic = "weight_gradient"
    seed_torch_rng = True  # torch.svd_lowrank draws from torch's RNG, seeded from the run's generator

    def default_alpha(self, rank: int) -> float:
        return 16.0

    def init_layer(self, weight, rank, scale, stats, generator):
        A, B = lora_one_factors(stats, rank, self.gamma)
        return A, B, None


class FWSVD(LayerwiseInit):
    summary = "FWSVD (Hsu et al. 2022): rows of W weighted by sqrt(row Fisher), exact SVD, top-r in A, B; base <- rest."
    paper = "Hsu et al. 2022, arXiv:2207.00112 (FWSVD); not LoKU's FILA (relative forget/retain Fisher)"
    code = "written here (FWSVD weighting; no reference LoRA-init code)"
    peft_init = True
    statistic = "weight_gradient_squares"

    def default_alpha(self, rank: int) -> float:
        return float(rank)

    def init_layer(self, weight, rank, scale, stats, generator):
        return fwsvd_factors(weight, stats, rank, scale)


class FisherSVD(FWSVD):
    """``fisher-svd``: the name FWSVD was registered under before issue 14; the same method, kept so that
    earlier results and commands (``--method fisher-svd``) still resolve."""

    summary = "Old name of fwsvd (same method), kept so earlier results and commands resolve."
