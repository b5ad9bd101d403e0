"""LoLDU and SVFit: frozen factors of W, only a diagonal of r values trains.

LoLDU -- Shi et al., "LoLDU: Low-Rank Adaptation via Lower-Diag-Upper Decomposition for
Parameter-Efficient Fine-Tuning", arXiv:2410.13618.  Code: https://github.com/SKDDJ/LoLDU
(``minloldu/loldu.py``: ``ldu_decomposition``, ``LoLDUParametrization.get_residual_matrix``;
``from_linear`` defaults lora_alpha = 1).  Written here.  Per layer W (out, in), k = min(out, in):
    P, L, U = torch.linalg.lu(W)         (W = P L U, partial pivoting; L (out, k) unit lower, U (k, in))
    D = diag(U);  U <- U / D[:, None]    (unit upper)
    keep L_r = L[:, :r], D_r = D[:r], U_r = U[:r]   (the first r in pivot order)
    adapter: scale * (P L_r) diag(D_r) U_r,  B = P L_r (out, r) frozen, A = U_r (r, in) frozen,
             middle = D_r, stored as a vector: the only trainable tensor (r numbers per layer)
    W <- W - scale * P L_r diag(D_r) U_r,   scale = alpha / r,  alpha = 1
so the model starts unchanged.  P is folded into B (the reference keeps a frozen P and computes
P @ L @ diag(z) @ U, ``loldu.py`` line 233); the product is the same.  What trains is the reference's:
only D_r (its ``vector_z``).  ``loldu.py`` freezes U, L and P (lines 142-146) and its optimizer takes
``get_loldu_params``, whose filter ``name_is_loldu`` (``loldu_utils.py`` lines 22-29) keeps
``vector_z`` alone (``scaling_factor`` is an ``nn.Parameter`` there, but the filter's variant that would
train it is commented out, and the README's recipe freezes every other parameter).  The scale is
therefore fixed at alpha / r in both, as peft's ``scaling`` here.

SVFit -- Sun et al., "SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models Using
Singular Values", arXiv:2409.05926 (no public code found; written from the paper).  Exact SVD
W = U S V^T = W_r + W_e with W_r the top-r part:
    B = U_r (out, r) frozen, A = V_r^T (r, in) frozen, middle = S_r / scale (a vector): the only
    trainable tensor, W <- W_e = W - scale * U_r diag(S_r / scale) V_r^T, alpha = r (scale 1)
so the model starts unchanged and training moves only the top-r singular values.
"""

from __future__ import annotations

import torch

from initbench.api import InitError, LayerInit, LayerwiseInit


def loldu_factors(
    weight: torch.Tensor, rank: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A = U_r (r, in), B = P L_r (out, r), D_r (r,), residual W - scale * B diag(D_r) A) of LoLDU."""
    if rank > min(weight.shape):
        raise InitError(f"LoLDU needs r <= min(out, in) = {min(weight.shape)}, got {rank}")
    P, L, U = torch.linalg.lu(weight.float())
    D = torch.diagonal(U)
    if (D[:rank] == 0).any():
        raise InitError("LoLDU: zero pivot among the first r diagonal entries of U")
    U = U / D[:, None]
    A, B, d = U[:rank].contiguous(), (P @ L[:, :rank]).contiguous(), D[:rank].clone()
    return A, B, d, weight - scale * (B * d) @ A


def svfit_factors(
    weight: torch.Tensor, rank: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A = V_r^T, B = U_r, singular values S_r / scale, residual W_e) of SVFit."""
    if rank > min(weight.shape):
        raise InitError(f"SVFit needs r <= min(out, in) = {min(weight.shape)}, got {rank}")
    U, S, Vh = torch.linalg.svd(weight.float(), full_matrices=False)
    A, B, s = Vh[:rank].contiguous(), U[:, :rank].contiguous(), S[:rank] / scale
    return A, B, s, weight - scale * (B * s) @ A


class _DiagonalMiddle(LayerwiseInit):
    """Per layer: frozen A and B, a trainable diagonal middle, the base offset by their product."""

    peft_init = True
    statistic = "none"
    trained_parts = ("M",)

    def factors(self, weight, rank, scale):
        raise NotImplementedError

    def init_layer(self, weight, rank, scale, stats, generator):
        A, B, d, residual = self.factors(weight, rank, scale)
        return LayerInit(A, B, base=residual, middle=d)


class LoLDU(_DiagonalMiddle):
    summary = "LoLDU: W = P L D U; P L_r, U_r frozen, only the r values D_r train; base <- W - s P L_r D_r U_r."
    paper = "Shi et al. 2024, arXiv:2410.13618"
    code = "https://github.com/SKDDJ/LoLDU (minloldu/loldu.py); written here"

    def default_alpha(self, rank: int) -> float:
        return 1.0

    def factors(self, weight, rank, scale):
        return loldu_factors(weight, rank, scale)


class SVFit(_DiagonalMiddle):
    summary = "SVFit: top-r singular vectors of W frozen, only the r singular values train; base <- W_e."
    paper = "Sun et al. 2024, arXiv:2409.05926"
    code = "no public code found; written from the paper"

    def default_alpha(self, rank: int) -> float:
        return float(rank)

    def factors(self, weight, rank, scale):
        return svfit_factors(weight, rank, scale)
