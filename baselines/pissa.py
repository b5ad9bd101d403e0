"""PiSSA: principal singular values and vectors adaptation.

Paper: Meng, Wang & Zhang, "PiSSA: Principal Singular Values and Singular Vectors
Adaptation of Large Language Models", NeurIPS 2024, arXiv 2404.02948.
Code: https://github.com/GraphPKU/PiSSA; implemented here through peft's own
``init_lora_weights="pissa"`` (``LoraLayer.pissa_init``): with W = U S V^T (exact SVD),
A = diag(sqrt(S_r / scale)) V_r^T, B = U_r diag(sqrt(S_r / scale)) and the frozen base
becomes the residual W - scale * B A, so the model starts unchanged.  The authors'
scripts set alpha = r (scale 1), which is this method's default scaling convention.
"""

from initbench.api import InitMethod


class PiSSA(InitMethod):
    summary = "Top-r SVD of W in A and B, base replaced by the residual (peft 'pissa', exact SVD)."
    paper = "Meng et al. 2024, arXiv:2404.02948"
    code = "https://github.com/GraphPKU/PiSSA (via peft init_lora_weights='pissa')"
    peft_init = "pissa"

    def default_alpha(self, rank: int) -> float:
        return float(rank)


class PiSSANiter4(PiSSA):
    """PiSSA with the fast randomized SVD: peft ``init_lora_weights="pissa_niter_4"``, i.e.
    ``V_r, S_r, U_r = torch.svd_lowrank(W, q=r, niter=4)`` (Halko et al.), then the same A, B and
    residual as ``pissa``.  The authors recommend it for large models (seconds instead of minutes).
    The draw uses torch's global RNG, which the harness seeds with the run's seed before attaching."""

    summary = "PiSSA with randomized SVD (peft 'pissa_niter_4': svd_lowrank(W, q=r, niter=4))."
    code = "https://github.com/GraphPKU/PiSSA (via peft init_lora_weights='pissa_niter_4')"
    peft_init = "pissa_niter_4"
