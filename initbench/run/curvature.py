"""Curvature at initialization: the top eigenvalues of the training loss's Hessian with respect to
the trainable parameters, right after a method's ``initialize``.

"Learning Rate Matters" (arXiv 2602.04998) reports that a LoRA init's best learning rate tracks
``1 / lambda_max`` of this Hessian.  The estimate here is Lanczos with full reorthogonalization on
exact Hessian-vector products (double backward), over a fixed list of batches (the mean of their
losses), always in float32 with autocast off and the model in eval mode (no dropout), whatever the
run trains in.  Lanczos, not power iteration: at a zero-B init the Hessian is indefinite, and power
iteration converges to the eigenvalue of largest *magnitude*, which may be negative; Lanczos gives
the algebraically largest ones.

The Lanczos vectors are stored in float32 (arithmetic on them in float64): an adapter of 100Ms of
parameters (a large model at a high rank) makes each one GBs.  Where the iterations asked do not fit in ``BASIS_MEMORY_SHARE`` of the memory
available, as many as fit run, with a warning (the estimate records the iterations and whether they
converged); where two do not fit, a ``MemoryError`` says so before any compute.

The measurement is charged to nothing in the budget (it is not part of the method); its own cost
is recorded: Hessian-vector products, forward/backward passes, seconds, and the convergence (the
largest relative change of the top eigenvalues at the last iteration).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


@dataclass(frozen=True)
class CurvatureEstimate:
    """What one Lanczos run found and what it cost."""

    eigenvalues: list[float]  # the top ones, descending
    iterations: int
    hvps: int  # Hessian-vector products (each: one forward and a double backward per batch)
    batches: int
    passes: int  # forward passes: hvps * batches (each with a backward and a double backward)
    seconds: float
    relative_change: float  # max over the top k of |lambda(m) - lambda(m-1)| / |lambda(m)| at the last iteration
    converged: bool
    trainable_params: int

    @property
    def lambda_max(self) -> float:
        return self.eigenvalues[0]

    def as_record(self) -> dict[str, object]:
        record = asdict(self)
        record["lambda_max"] = self.lambda_max
        return record


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the optimizer would train: those that require a gradient."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("curvature: the model has no trainable parameters")
    return params


def hessian_vector_product(
    model: torch.nn.Module,
    params: Sequence[torch.nn.Parameter],
    batches: Sequence[dict[str, torch.Tensor]],
    vector: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """``H v`` of the mean over ``batches`` of ``model(**batch).loss`` (exact, by double backward),
    one batch's graph at a time so memory is that of a single batch."""
    total = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    for batch in batches:
        loss = model(**batch).loss.float()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g.float() * v).sum() for g, v in zip(grads, vector))
        hv = torch.autograd.grad(dot, params, allow_unused=True)
        for acc, h in zip(total, hv):
            if h is not None:
                acc.add_(h.float())
    return [t / len(batches) for t in total]


def top_hessian_eigenvalues(
    model: torch.nn.Module,
    batches: Sequence[dict[str, torch.Tensor]],
    *,
    k: int = 1,
    max_iterations: int = 30,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
) -> CurvatureEstimate:
    """The ``k`` algebraically largest eigenvalues of the Hessian of the mean batch loss with respect
    to the trainable parameters, by Lanczos (full reorthogonalization) from a seeded random start.

    Stops when each of the top ``k`` changes by less than ``tol`` (relative) between two iterations, or after ``max_iterations``, or when the Krylov space is exhausted (then
    exact).  The model is put in eval mode and float32 with autocast off for the measurement and
    its training mode restored."""
    if not batches:
        raise ValueError("curvature: no batches to measure the loss on")
    params = trainable_parameters(model)
    if any(p.dtype != torch.float32 for p in params):
        raise ValueError("curvature: trainable parameters must be float32 (the measurement is float32)")
    n = sum(p.numel() for p in params)
    max_iterations = min(max_iterations, n)
    was_training = model.training
    model.eval()
    start = time.perf_counter()

    def matvec(flat: torch.Tensor) -> torch.Tensor:
        pieces = list(torch.split(flat, [p.numel() for p in params]))
        vector = [piece.view_as(p) for piece, p in zip(pieces, params)]
        return torch.cat([h.reshape(-1) for h in hessian_vector_product(model, params, batches, vector)])

    device = params[0].device
    max_iterations = _iterations_that_fit(n, max_iterations, available_memory(device))
    q = torch.randn(n, generator=generator, dtype=torch.float64).to(device)
    q /= q.norm()
    # the Lanczos vectors are kept in float32 (an adapter of 100Ms of parameters makes each GBs) and the
    # arithmetic on them done in float64, one vector at a time
    basis, alphas, betas = [q.float()], [], []
    history: list[list[float]] = []
    relative_change, hvps = float("inf"), 0
    try:
        # SDPA's fused CPU/GPU kernels have no double backward; its math kernel computes the same thing
        with torch.autocast(device.type, enabled=False), sdpa_kernel([SDPBackend.MATH]):
            for m in range(max_iterations):
                w = matvec(basis[-1]).double()
                hvps += 1
                last = basis[-1].double()
                alpha = float(torch.dot(w, last))
                alphas.append(alpha)
                w.sub_(last, alpha=alpha)
                del last
                if betas:
                    w.sub_(basis[-2].double(), alpha=betas[-1])
                for _ in range(2):  # full reorthogonalization, twice is enough
                    for b in basis:
                        b64 = b.double()
                        w.sub_(b64, alpha=float(torch.dot(w, b64)))
                        del b64
                ritz = _tridiagonal_eigenvalues(alphas, betas)
                history.append(ritz[:k])
                if len(history) > 1 and len(history[-2]) == len(history[-1]):
                    relative_change = max(
                        abs(new - old) / max(abs(new), 1e-30) for new, old in zip(history[-1], history[-2])
                    )
                beta = float(w.norm())
                exhausted = beta <= 1e-10 * max(abs(ritz[0]), 1.0)
                if exhausted or (m >= k and relative_change < tol):
                    if exhausted:
                        relative_change = 0.0
                    break
                betas.append(beta)
                basis.append((w / beta).float())
    finally:
        model.train(was_training)
    ritz = _tridiagonal_eigenvalues(alphas, betas[: len(alphas) - 1])
    return CurvatureEstimate(
        eigenvalues=ritz[:k],
        iterations=len(alphas),
        hvps=hvps,
        batches=len(batches),
        passes=hvps * len(batches),
        seconds=time.perf_counter() - start,
        relative_change=relative_change,
        converged=relative_change < tol,
        trainable_params=n,
    )


BASIS_MEMORY_SHARE = 0.6  # of the memory available when a measurement starts, for its Lanczos vectors
_WORKING_VECTORS = 3  # float64 vectors of n alongside the basis: the product, the vector being subtracted, a temporary


def available_memory(device: torch.device) -> int | None:
    """Bytes a new allocation can take on ``device`` now (Linux's MemAvailable on the CPU, the free
    memory on a GPU); None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in open("/proc/meminfo").read().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _iterations_that_fit(n: int, wanted: int, available: int | None) -> int:
    """``wanted`` Lanczos iterations, or as many as fit in ``BASIS_MEMORY_SHARE`` of ``available``
    bytes (a float32 vector of ``n`` per iteration besides the float64 working vectors), with a
    warning: the row records the iterations run and whether they converged.  Fewer than two fit: a
    ``MemoryError`` before any compute, saying how much is needed."""
    if available is None:
        return wanted
    budget = BASIS_MEMORY_SHARE * available - _WORKING_VECTORS * 8 * n
    fits = int(budget // (4 * n)) - 1  # the start vector, then one more per iteration
    if fits >= wanted:
        return wanted
    need = (_WORKING_VECTORS * 8 + 2 * 4) * n / BASIS_MEMORY_SHARE
    if fits < 2:
        raise MemoryError(
            f"curvature: {n:,} trainable parameters: even two Lanczos iterations need about {need / 2**30:.1f} GiB "
            f"available, {available / 2**30:.1f} GiB is; measure this method on a machine with more memory"
        )
    warnings.warn(
        f"curvature: {n:,} trainable parameters: {fits} Lanczos iterations fit in {BASIS_MEMORY_SHARE:.0%} of the "
        f"{available / 2**30:.1f} GiB available, not {wanted}; capped (the row records the iterations run and "
        "whether they converged)",
        stacklevel=3,
    )
    return fits


def _tridiagonal_eigenvalues(alphas: list[float], betas: list[float]) -> list[float]:
    """Eigenvalues of the Lanczos tridiagonal matrix, descending."""
    m = len(alphas)
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if m > 1:
        off = torch.tensor(betas[: m - 1], dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    return sorted(torch.linalg.eigvalsh(t).tolist(), reverse=True)
