"""Statistics for the leaderboard: per-task intervals, rliable aggregates, significance, convergence.

Pure numpy/scipy and self-contained.  Unless a function says otherwise, a *score
matrix* has shape ``(n_seeds, n_tasks)``: rows are runs (seeds), columns are tasks,
the layout of rliable (Agarwal et al., "Deep Reinforcement Learning at the Edge of
the Statistical Precipice", NeurIPS 2021; https://github.com/google-research/rliable).

Randomness: every function that resamples takes ``rng``, a ``np.random.Generator``
(or an int seed).  ``rng=None`` means ``np.random.default_rng(DEFAULT_SEED)``, so a
leaderboard rebuilt from the same results prints the same intervals.

Missing runs: the per-task helpers (``bootstrap_ci``, ``task_summary``) drop NaNs
(a failed seed); the matrix aggregates need a complete matrix and raise on NaN,
because rliable's stratified bootstrap assumes the same runs for every task.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.stats

__all__ = [
    "DEFAULT_SEED",
    "PairedTestResult",
    "TaskSummary",
    "aggregate_iqm",
    "aggregate_mean",
    "aggregate_median",
    "aggregate_metrics",
    "aggregate_optimality_gap",
    "auc",
    "best_reference",
    "bootstrap_ci",
    "ema",
    "holm",
    "holm_can_reject",
    "minimum_detectable_difference",
    "normalize",
    "paired_test",
    "paired_tests",
    "probability_of_improvement",
    "probability_of_improvement_ci",
    "probability_of_improvement_cis",
    "significant",
    "steps_to_reach",
    "stratified_bootstrap_ci",
    "stratified_bootstrap_iqm_cis",
    "task_summary",
]

DEFAULT_SEED = 0
#: rliable's ``get_interval_estimates`` default number of bootstrap replications.
RLIABLE_REPS = 50_000
# Bootstrap replications are drawn and evaluated in chunks of at most this many
# array elements, to bound memory; results depend only on the inputs and the rng.
_CHUNK_ELEMENTS = 4_000_000

RngLike = np.random.Generator | int | None
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 spells it trapz


def _rng(rng: RngLike) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(DEFAULT_SEED if rng is None else rng)


def _clean_1d(values: Iterable[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=float).reshape(-1)
    return x[~np.isnan(x)]


def _score_matrix(scores: np.ndarray | Sequence[Sequence[float]], name: str = "scores") -> np.ndarray:
    m = np.asarray(scores, dtype=float)
    if m.ndim == 1:
        m = m[:, None]  # one task
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty (n_seeds, n_tasks) matrix, got shape {m.shape}")
    if np.isnan(m).any():
        raise ValueError(f"{name} contains NaN: drop or impute failed runs before aggregating")
    return m


# --------------------------------------------------------------------------- per task


def bootstrap_ci(
    values: Iterable[float] | np.ndarray,
    confidence: float = 0.95,
    method: Literal["percentile", "bca"] = "percentile",
    n_resamples: int = 9999,
    rng: RngLike = None,
) -> tuple[float, float]:
    """Bootstrap confidence interval of the mean of ``values`` (one task, over seeds).

    A thin wrapper over ``scipy.stats.bootstrap((values,), np.mean, method=...)``
    (Efron & Tibshirani 1993): ``"percentile"`` takes the ``(1-c)/2`` and ``(1+c)/2``
    quantiles of the bootstrap means; ``"bca"`` is the bias-corrected and accelerated
    interval (scipy's ``"BCa"``).  For the same ``rng`` state the result equals
    scipy's exactly.  NaNs are dropped first.

    Degenerate cases (documented choice):
      * n = 0 or n = 1: ``(nan, nan)``.  One seed says nothing about seed-to-seed
        spread, and a zero-width interval would claim certainty that is not there.
      * constant sample (n >= 2, all equal to c): ``(c, c)``.  Every resample has
        mean c; scipy's BCa is undefined here (0/0 acceleration), so both methods
        return the degenerate interval.
    """
    x = _clean_1d(values)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    key = method.lower()
    if key not in ("percentile", "bca"):
        raise ValueError(f"method must be 'percentile' or 'bca', got {method!r}")
    if x.size < 2:
        return (math.nan, math.nan)
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    res = scipy.stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="BCa" if key == "bca" else "percentile",
        rng=_rng(rng),
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


@dataclass(frozen=True)
class TaskSummary:
    """Per-task statistics over seeds; every array has shape ``(n_tasks,)`` or ``(n_tasks, 2)``."""

    n: np.ndarray  # non-NaN seeds per task
    mean: np.ndarray
    std: np.ndarray  # sample std, ddof=1 (nan when n < 2)
    ci_percentile: np.ndarray  # (n_tasks, 2): low, high
    ci_bca: np.ndarray  # (n_tasks, 2): low, high


def task_summary(
    scores: np.ndarray | Sequence[Sequence[float]],
    confidence: float = 0.95,
    n_resamples: int = 9999,
    rng: RngLike = None,
) -> TaskSummary:
    """Mean, std (ddof=1) and percentile + BCa bootstrap CIs of the mean, per task column.

    ``scores`` is ``(n_seeds, n_tasks)`` (a 1-D array is one task); NaNs are dropped
    per column.  Both intervals of a task come from the *same* bootstrap
    distribution (scipy's ``bootstrap_result`` reuse), so they differ only by the
    interval method; degenerate columns follow ``bootstrap_ci``'s rules.
    """
    m = np.asarray(scores, dtype=float)
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2:
        raise ValueError(f"scores must be (n_seeds, n_tasks), got shape {m.shape}")
    gen = _rng(rng)
    t = m.shape[1]
    n = np.zeros(t, dtype=int)
    mean = np.full(t, math.nan)
    std = np.full(t, math.nan)
    ci_p = np.full((t, 2), math.nan)
    ci_b = np.full((t, 2), math.nan)
    for j in range(t):
        x = _clean_1d(m[:, j])
        n[j] = x.size
        if x.size == 0:
            continue
        mean[j] = x.mean()
        if x.size < 2:
            continue
        std[j] = x.std(ddof=1)
        if np.all(x == x[0]):
            ci_p[j] = ci_b[j] = x[0]
            continue
        res = scipy.stats.bootstrap(
            (x,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="percentile", rng=gen
        )
        ci_p[j] = res.confidence_interval
        with warnings.catch_warnings():  # BCa can be undefined for n == 2-ish samples; nan is the answer then
            warnings.simplefilter("ignore")
            bca = scipy.stats.bootstrap(
                (x,), np.mean, n_resamples=0, confidence_level=confidence, method="BCa", bootstrap_result=res, rng=gen
            )
        ci_b[j] = bca.confidence_interval
    return TaskSummary(n=n, mean=mean, std=std, ci_percentile=ci_p, ci_bca=ci_b)


# --------------------------------------------------------------------------- normalization


def normalize(
    scores: np.ndarray | Sequence[float] | float,
    floor: np.ndarray | Sequence[float] | float,
    ceiling: np.ndarray | Sequence[float] | float,
) -> np.ndarray:
    """Normalized score ``(score - floor) / (ceiling - floor)``, per task (last axis).

    ``floor`` is the ``base`` reference (the untrained model, -> 0) and ``ceiling``
    the best reference (-> 1): pass ``full-ft``'s per-task mean when that reference
    was run (a fixed target), or ``best_reference(...)`` (max over methods' per-task
    means, which moves when methods are added).  ``floor``/``ceiling`` broadcast
    against ``scores`` (shape ``(n_tasks,)`` for a ``(n_seeds, n_tasks)`` matrix).
    Lower-is-better metrics need no special case: with ceiling < floor the ratio
    still maps floor -> 0 and ceiling -> 1.

    Guard: where ``ceiling == floor`` (or either is NaN) the task cannot be
    normalized; its entries are NaN and a ``RuntimeWarning`` names how many tasks.
    """
    s = np.asarray(scores, dtype=float)
    lo = np.asarray(floor, dtype=float)
    hi = np.asarray(ceiling, dtype=float)
    span = hi - lo
    bad = ~np.isfinite(span) | (span == 0)
    if np.any(bad):
        warnings.warn(
            f"normalize: {int(np.sum(bad))} task(s) with ceiling == floor (or non-finite); "
            "their normalized scores are NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (s - lo) / np.where(bad, np.nan, span)
    return out


def best_reference(
    method_scores: Mapping[str, np.ndarray],
    exclude: Iterable[str] = ("base",),
    higher_is_better: bool | Sequence[bool] | np.ndarray = True,
) -> np.ndarray:
    """Ceiling candidate: per task, the best over methods of the seed-mean score.

    ``method_scores`` maps method -> ``(n_seeds, n_tasks)`` raw scores (NaNs ignored
    in the seed mean); methods in ``exclude`` are skipped.  Best is the max, or the
    min for tasks where ``higher_is_better`` is False.  Note the best method then
    scores exactly 1 on that task by construction.
    """
    skip = set(exclude)
    with warnings.catch_warnings():  # a method missing a task has an all-NaN column: its mean is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        means = [
            np.nanmean(np.asarray(v, dtype=float).reshape(np.shape(v)[0], -1), axis=0)
            for k, v in method_scores.items()
            if k not in skip
        ]
    if not means:
        raise ValueError("best_reference: no methods left after exclusion")
    stacked = np.vstack(means)
    hib = np.broadcast_to(np.asarray(higher_is_better, dtype=bool), stacked.shape[1:])
    return np.where(hib, np.nanmax(stacked, axis=0), np.nanmin(stacked, axis=0))


# --------------------------------------------------------------------------- rliable aggregates
# The aggregates take ``(..., n_runs, n_tasks)`` and reduce the last two axes, so the
# stratified bootstrap can evaluate a whole chunk of resamples in one call.


def aggregate_mean(scores: np.ndarray) -> np.ndarray | float:
    """rliable ``aggregate_mean``: mean over tasks of the per-task mean over runs."""
    return np.mean(np.mean(scores, axis=-2), axis=-1)


def aggregate_median(scores: np.ndarray) -> np.ndarray | float:
    """rliable ``aggregate_median``: median over tasks of the per-task mean over runs."""
    return np.median(np.mean(scores, axis=-2), axis=-1)


def aggregate_iqm(scores: np.ndarray) -> np.ndarray | float:
    """rliable ``aggregate_iqm``: interquartile mean over all runs x tasks.

    ``scipy.stats.trim_mean(scores.flatten(), proportiontocut=0.25)``: sort the
    N = runs*tasks scores, cut ``floor(0.25 N)`` from each end, average the rest.
    """
    s = np.asarray(scores, dtype=float)
    flat = s.reshape(*s.shape[:-2], -1)
    return scipy.stats.trim_mean(flat, proportiontocut=0.25, axis=-1)


def aggregate_optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> np.ndarray | float:
    """rliable ``aggregate_optimality_gap``: ``gamma - mean(min(scores, gamma))`` over all runs x tasks.

    How far the scores fall short of ``gamma`` (1 = the ceiling for normalized
    scores); lower is better and scores above ``gamma`` earn nothing extra.
    """
    s = np.asarray(scores, dtype=float)
    return gamma - np.mean(np.minimum(s, gamma), axis=(-2, -1))


_BATCHED = {aggregate_mean, aggregate_median, aggregate_iqm, aggregate_optimality_gap}


def aggregate_metrics(scores: np.ndarray | Sequence[Sequence[float]], gamma: float = 1.0) -> dict[str, float]:
    """rliable's four aggregates of a (normalized) score matrix: median, IQM, mean, optimality gap."""
    m = _score_matrix(scores)
    return {
        "median": float(aggregate_median(m)),
        "iqm": float(aggregate_iqm(m)),
        "mean": float(aggregate_mean(m)),
        "optimality_gap": float(aggregate_optimality_gap(m, gamma)),
    }


def _percentile_interval(stats: np.ndarray, confidence: float) -> tuple[np.ndarray | float, np.ndarray | float]:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    lo, hi = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    if np.ndim(lo) == 0:
        return float(lo), float(hi)
    return lo, hi


def _resample_within_tasks(m: np.ndarray, b: int, gen: np.random.Generator) -> np.ndarray:
    """``b`` stratified resamples of ``m`` (n, T): each task column's runs drawn with replacement."""
    n, t = m.shape
    idx = gen.integers(0, n, size=(b, n, t))
    return m[idx, np.arange(t)]  # (b, n, t)


def stratified_bootstrap_ci(
    score_matrix: np.ndarray | Sequence[Sequence[float]],
    aggregate_fn: Callable[[np.ndarray], float | np.ndarray] = aggregate_iqm,
    reps: int = RLIABLE_REPS,
    confidence: float = 0.95,
    rng: RngLike = None,
    *,
    vectorized: bool | None = None,
) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """rliable's stratified-bootstrap percentile CI of ``aggregate_fn(score_matrix)``.

    As in rliable ``StratifiedBootstrap`` / ``get_interval_estimates`` (defaults:
    50,000 reps, percentile, 95%): each replication resamples the runs with
    replacement *independently within every task column* (tasks are fixed strata,
    ``task_bootstrap=False``), recomputes the aggregate, and the interval is the
    ``(1-c)/2`` and ``(1+c)/2`` percentiles (numpy linear interpolation) of the
    replications.  ``aggregate_fn`` may return a scalar or 1-D array (then low/high
    are arrays).  ``vectorized=True`` means it reduces the last two axes of a
    ``(reps, n_runs, n_tasks)`` batch; ``None`` turns it on for this module's
    aggregates.  Returns ``(low, high)``.
    """
    m = _score_matrix(score_matrix, "score_matrix")
    gen = _rng(rng)
    if reps < 1:
        raise ValueError("reps must be >= 1")
    if aggregate_fn is aggregate_iqm and vectorized is not False and _iqm_exact_path(m):
        return _iqm_intervals([m], reps, confidence, gen)[0]
    batched = aggregate_fn in _BATCHED if vectorized is None else vectorized
    chunk = max(1, min(reps, _CHUNK_ELEMENTS // m.size))
    out: list[np.ndarray] = []
    done = 0
    while done < reps:
        b = min(chunk, reps - done)
        res = _resample_within_tasks(m, b, gen)
        if batched:
            out.append(np.asarray(aggregate_fn(res), dtype=float).reshape(b, -1))
        else:
            out.append(np.stack([np.asarray(aggregate_fn(r), dtype=float).reshape(-1) for r in res]))
        done += b
    stats = np.concatenate(out, axis=0)
    if stats.shape[1] == 1:
        stats = stats[:, 0]
    return _percentile_interval(stats, confidence)


def stratified_bootstrap_iqm_cis(
    matrices: Sequence[np.ndarray | Sequence[Sequence[float]]],
    reps: int = RLIABLE_REPS,
    confidence: float = 0.95,
    seed: int | None = None,
) -> list[tuple[float, float]]:
    """``stratified_bootstrap_ci(m, aggregate_iqm, reps, confidence, rng=seed)`` for every matrix, each
    with a fresh generator seeded ``seed``: the same numbers.  Matrices of one shape then see the same
    resampling indices, so they are drawn once for all of them."""
    if reps < 1:
        raise ValueError("reps must be >= 1")
    checked = [_score_matrix(m, "score_matrix") for m in matrices]
    out: list[tuple[float, float] | None] = [None] * len(checked)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, m in enumerate(checked):
        if _iqm_exact_path(m):
            groups.setdefault(m.shape, []).append(i)
        else:
            out[i] = stratified_bootstrap_ci(m, aggregate_iqm, reps, confidence, rng=seed)
    for members in groups.values():
        for i, interval in zip(members, _iqm_intervals([checked[i] for i in members], reps, confidence, _rng(seed))):
            out[i] = interval
    return out  # type: ignore[return-value]


def _iqm_exact_path(m: np.ndarray) -> bool:
    """Whether ``_iqm_intervals`` applies: finite scores far from overflow."""
    return bool(np.all(np.abs(m) < 1e300))


def _iqm_intervals(
    matrices: list[np.ndarray], reps: int, confidence: float, gen: np.random.Generator
) -> list[tuple[float, float]]:
    """``stratified_bootstrap_ci(m, aggregate_iqm, reps, confidence, gen)`` for matrices of one shape,
    from one draw of the resampling indices (the generic path's draws, chunk by chunk), with the
    same numbers but without partitioning every replication.

    Each replication's IQM is first approximated from its scores quantized to 16 bits and sorted (a
    fast SIMD sort; ``_quantized``): the approximation is within ``delta`` of ``aggregate_iqm``'s
    value (half a quantization step, as a trimmed mean moves no more than its inputs do, plus a
    rounding-error bound for ``aggregate_iqm``'s own float64 sum).  The percentile interval interpolates
    between a few order statistics of the replications; the replications within ``2 delta`` of each
    such order statistic are recomputed with ``aggregate_iqm`` itself, and the order statistic is read
    off them: every other replication is certainly below or above it.  ``np.percentile`` then
    interpolates between exactly the values the generic path would give it."""
    n, t = matrices[0].shape
    size = n * t
    chunk = max(1, min(reps, _CHUNK_ELEMENTS // size))
    cut = int(0.25 * size)  # scipy.stats.trim_mean's lowercut for proportiontocut=0.25
    kept = size - 2 * cut
    quantized = [_quantized(m) for m in matrices]
    approx = np.empty((len(matrices), reps))
    draws: list[tuple[int, dict, np.ndarray | None]] = []  # per chunk: first replication, generator state, indices
    keep = reps * size <= _CHUNK_ELEMENTS  # small enough to keep every index; else drawn again when needed
    columns = np.arange(t)
    done = 0
    while done < reps:
        b = min(chunk, reps - done)
        state = gen.bit_generator.state
        idx = gen.integers(0, n, size=(b, n, t))  # as _resample_within_tasks draws them
        draws.append((done, state, idx if keep else None))
        flat = (idx * t + columns).reshape(b, size)  # m[idx, columns], as positions in m.ravel()
        for j, (levels, low, step, _) in enumerate(quantized):
            ordered = levels.take(flat)
            ordered.sort(axis=1)
            middle = ordered[:, cut : size - cut].sum(axis=1, dtype=np.int64)  # exact
            approx[j, done : done + b] = low + (middle / kept) * step
        done += b

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    virtual = (reps - 1) * np.true_divide([100 * alpha / 2, 100 * (1 - alpha / 2)], 100)  # np.percentile's
    positions = sorted({int(min(max(p, 0), reps - 1)) for v in virtual for p in (np.floor(v), np.floor(v) + 1)})
    windows = []  # per matrix and position: the position within its window, the replications to recompute
    wanted: set[tuple[int, int]] = set()
    for j, (_, _, _, delta) in enumerate(quantized):
        delta += 4 * (kept + 8) * _UNIT * float(np.max(np.abs(matrices[j])))  # aggregate_iqm's and our rounding
        near = []
        for p, value in zip(positions, np.partition(approx[j], positions)[positions]):
            below, above = value - 2 * delta, value + 2 * delta
            first = int(np.count_nonzero(approx[j] < below))  # these are certainly below
            near.append((p - first, np.flatnonzero((approx[j] >= below) & (approx[j] <= above))))  # the rest above
        windows.append(near)
        wanted.update((j, int(r)) for _, window in near for r in window)
    exact = _exact_iqms(matrices, sorted(wanted), draws, chunk, reps, gen)
    out = []
    for j, near in enumerate(windows):
        values = [np.sort([exact[(j, int(r))] for r in window])[k] for k, window in near]
        stand_in = np.empty(reps)  # sorted, with the exact order statistics at ``positions``
        start = 0
        for p, value in zip(positions, values):
            stand_in[start : p + 1] = value
            start = p + 1
        stand_in[start:] = values[-1]
        out.append(_percentile_interval(stand_in, confidence))
    return out


_LEVELS = 65_535  # a score quantized to 16 bits: an integer 0 .. _LEVELS
_UNIT = np.finfo(np.float64).eps / 2  # float64's unit roundoff


def _quantized(m: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """``m``'s scores as 16-bit levels: ``round((score - low) / step)`` with ``low`` its least score
    and ``step`` its range over ``_LEVELS``, and the most a level times ``step`` plus ``low`` is off
    from its score (half a step, and the rounding of computing the levels).  The map is monotone (a
    difference, a product with a positive number and rounding each keep the order), so a sorted
    resample's levels are the levels of its sorted scores, and its middle half is the middle half
    of the scores: their mean is within that bound of theirs.  Returns (levels, low, step, bound)."""
    flat = m.ravel()
    low = float(flat.min())
    span = float(flat.max()) - low
    if not span > 0:  # every score the same: every level 0, exact
        return np.zeros(flat.size, np.uint16), low, 0.0, 0.0
    levels = np.clip(np.rint((flat - low) * (_LEVELS / span)), 0, _LEVELS).astype(np.uint16)
    step = span / _LEVELS
    return levels, low, step, (0.5 + 1e-6) * step  # 1e-6 of a step: far above the rounding (~1e-11)


def _exact_iqms(
    matrices: list[np.ndarray],
    wanted: list[tuple[int, int]],
    draws: list,
    chunk: int,
    reps: int,
    gen: np.random.Generator,
) -> dict[tuple[int, int], float]:
    """``aggregate_iqm`` of replication r of matrix j for each (j, r) in ``wanted``, one call per chunk of
    draws (a replication's value does not depend on the others computed with it)."""
    n, t = matrices[0].shape
    columns = np.arange(t)
    out: dict[tuple[int, int], float] = {}
    for first, state, idx in draws:
        mine = [(j, r) for j, r in wanted if first <= r < first + chunk]
        if not mine:
            continue
        if idx is None:  # draw the chunk again from the generator's state before it
            again = np.random.Generator(type(gen.bit_generator)())
            again.bit_generator.state = state
            idx = again.integers(0, n, size=(min(chunk, reps - first), n, t))
        values = aggregate_iqm(np.stack([matrices[j][idx[r - first], columns] for j, r in mine]))
        out.update(zip(mine, np.atleast_1d(values).tolist()))
    return out


# --------------------------------------------------------------------------- probability of improvement


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> np.ndarray | float:
    """rliable's average probability of improvement P(X > Y).

    Per task m: ``P(X_m > Y_m) = U / (n m)``, the Mann-Whitney U statistic of X's
    ``n`` runs against Y's ``m`` runs, i.e. the fraction of (x, y) pairs with
    x > y, ties counted 1/2; then averaged over tasks.  Inputs are
    ``(n_runs_x, n_tasks)`` and ``(n_runs_y, n_tasks)`` (run counts may differ);
    leading batch axes are allowed and broadcast.
    """
    x = np.asarray(scores_x, dtype=float)
    y = np.asarray(scores_y, dtype=float)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"task counts differ: {x.shape[-1]} vs {y.shape[-1]}")
    xa = x[..., :, None, :]
    ya = y[..., None, :, :]
    per_task = np.mean(xa > ya, axis=(-3, -2)) + 0.5 * np.mean(xa == ya, axis=(-3, -2))
    return np.mean(per_task, axis=-1)


def probability_of_improvement_ci(
    scores_x: np.ndarray | Sequence[Sequence[float]],
    scores_y: np.ndarray | Sequence[Sequence[float]],
    reps: int = RLIABLE_REPS,
    confidence: float = 0.95,
    rng: RngLike = None,
) -> tuple[float, float]:
    """Stratified-bootstrap percentile CI of ``probability_of_improvement(X, Y)``.

    As rliable's ``StratifiedIndependentBootstrap``: each replication resamples X's
    runs and, independently, Y's runs with replacement within every task column.
    Returns ``(low, high)``.
    """
    x = _score_matrix(scores_x, "scores_x")
    y = _score_matrix(scores_y, "scores_y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"task counts differ: {x.shape[1]} vs {y.shape[1]}")
    return _poi_intervals([x], y, reps, confidence, _rng(rng))[0]


def probability_of_improvement_cis(
    scores_xs: Sequence[np.ndarray | Sequence[Sequence[float]]],
    scores_y: np.ndarray | Sequence[Sequence[float]],
    reps: int = RLIABLE_REPS,
    confidence: float = 0.95,
    seed: int | None = None,
) -> list[tuple[float, float]]:
    """``probability_of_improvement_ci(x, scores_y, reps, confidence, rng=seed)`` for every x, each with
    a fresh generator seeded ``seed``: the same numbers, the draws shared by the x of one shape."""
    y = _score_matrix(scores_y, "scores_y")
    xs = [_score_matrix(x, "scores_x") for x in scores_xs]
    out: list[tuple[float, float] | None] = [None] * len(xs)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(xs):
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"task counts differ: {x.shape[1]} vs {y.shape[1]}")
        groups.setdefault(x.shape, []).append(i)
    for members in groups.values():
        for i, interval in zip(members, _poi_intervals([xs[i] for i in members], y, reps, confidence, _rng(seed))):
            out[i] = interval
    return out  # type: ignore[return-value]


def _poi_intervals(
    xs: list[np.ndarray], y: np.ndarray, reps: int, confidence: float, gen: np.random.Generator
) -> list[tuple[float, float]]:
    """The stratified-bootstrap interval of ``probability_of_improvement(x, y)`` for each x (all of one
    shape), from one draw of the resampling indices (x's, then y's, per chunk, as drawn one x at a time).

    A replication's P(X > Y) on a task counts the (x, y) pairs of its resampled runs with x > y (and
    x == y, for the ties): with c_x and c_y how often each run was drawn, that count is the sum of
    ``c_x[i] c_y[j]`` over the pairs (i, j) with ``x_i > y_j``, an integer, exact in floating point
    (one matrix product for every x at once); then the same divisions and the same mean over tasks
    as ``probability_of_improvement``, so the same numbers."""
    if reps < 1:
        raise ValueError("reps must be >= 1")
    n, t = xs[0].shape
    m = y.shape[0]
    pairs = n * m
    chunk = max(1, min(reps, _CHUNK_ELEMENTS // (pairs * t)))
    exact = np.float32 if pairs < 2**24 else np.float64  # the counts (at most n m) are integers it holds exactly
    # per task, pair (i, j) and x: [x_i > y_j], then [x_i == y_j], (t, n m, 2 len(xs))
    wins = np.stack([x.T[:, :, None] > y.T[:, None, :] for x in xs], axis=-1).reshape(t, pairs, len(xs))
    ties = np.stack([x.T[:, :, None] == y.T[:, None, :] for x in xs], axis=-1).reshape(t, pairs, len(xs))
    outcome = np.concatenate([wins, ties], axis=-1).astype(exact)
    out: list[list[np.ndarray]] = [[] for _ in xs]
    done = 0
    while done < reps:
        b = min(chunk, reps - done)
        drawn_x = _draw_counts(gen.integers(0, n, size=(b, n, t)), n)  # (t, b, n)
        drawn_y = _draw_counts(gen.integers(0, m, size=(b, m, t)), m)  # (t, b, m)
        drawn = (drawn_x[..., :, None] * drawn_y[..., None, :]).reshape(t, b, pairs).astype(exact)
        step = max(1, _CHUNK_ELEMENTS // (t * b * 2))  # xs per product, to bound its size
        for first in range(0, len(xs), step):
            k = min(step, len(xs) - first)
            counted = np.matmul(drawn, outcome[..., np.r_[first : first + k, len(xs) + first : len(xs) + first + k]])
            counted = counted.astype(np.float64).transpose(2, 1, 0)  # (2k, b, t)
            per_task = np.ascontiguousarray(counted[:k] / pairs + 0.5 * (counted[k:] / pairs))  # (k, b, t)
            for j, scores in enumerate(np.mean(per_task, axis=-1)):
                out[first + j].append(scores)
        done += b
    return [_percentile_interval(np.concatenate(o), confidence) for o in out]  # type: ignore[misc]


def _draw_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(t, b, n): how often each of the ``n`` runs was drawn, per task and replication, from indices (b, k, t)."""
    b, _, t = idx.shape
    key = (np.arange(t)[None, None, :] * b + np.arange(b)[:, None, None]) * n + idx
    return np.bincount(key.ravel(), minlength=t * b * n).reshape(t, b, n).astype(float)


# --------------------------------------------------------------------------- paired tests, Holm


@dataclass(frozen=True)
class PairedTestResult:
    """Paired comparison of method X against a reference Y over (seed, task) pairs."""

    n_pairs: int  # complete (seed, task) pairs used
    n_nonzero: int  # pairs with x != y
    mean_diff: float  # mean of x - y
    median_diff: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float  # two-sided
    t_statistic: float
    t_pvalue: float  # two-sided paired t-test
    min_wilcoxon_pvalue: float  # smallest two-sided p the exact test can give: 2 ** (1 - n_nonzero)


def paired_test(
    scores_x: np.ndarray | Sequence[Sequence[float]],
    scores_y: np.ndarray | Sequence[Sequence[float]],
    zero_method: Literal["pratt", "wilcox", "zsplit"] = "pratt",
) -> PairedTestResult:
    """Two-sided Wilcoxon signed-rank and paired t-test of X vs a reference Y (e.g. ``lora``).

    ``scores_x`` and ``scores_y`` are ``(n_seeds, n_tasks)`` with the same layout;
    entry (s, t) of X is paired with entry (s, t) of Y (same seed, same task) and
    the tests run on the flattened differences ``d = x - y`` (pairs with a NaN on
    either side are dropped).  Tasks should be on a common (normalized) scale.

    Wilcoxon: ``scipy.stats.wilcoxon(d, zero_method=..., alternative="two-sided",
    method="auto")`` -- exact null distribution for <= 50 distinct non-zero
    differences, exhaustive permutations for <= 13 with ties/zeros, else normal
    approximation.  Zero differences (X ties Y on a pair): default ``"pratt"`` keeps
    them in the ranking and drops their ranks (Pratt 1959), so ties count as
    evidence of "no difference" instead of being thrown away as ``"wilcox"`` does.
    If every difference is zero the p-values are 1.0.  Few pairs: with k non-zero
    differences the smallest possible two-sided p is ``2**(1-k)`` (reported as
    ``min_wilcoxon_pvalue``), so k <= 5 can never reach 0.05; with fewer than 2
    pairs both p-values are NaN.

    t-test: the paired t-test on the same pairs (``scipy.stats.ttest_1samp(d, 0)``,
    identical to ``ttest_rel(x, y)``); with all differences equal and non-zero,
    t = +/-inf and p = 0.
    """
    d = _differences(scores_x, scores_y)
    done = _without_scipy(d)
    if done is not None:
        return done
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "catastrophic cancellation" on constant d
        w = scipy.stats.wilcoxon(d, zero_method=zero_method, alternative="two-sided", method="auto")
        t = scipy.stats.ttest_1samp(d, 0.0, alternative="two-sided")  # == ttest_rel(x, y)
    return _paired_result(d, float(w.statistic), float(w.pvalue), float(t.statistic), float(t.pvalue))


#: more pairs than this: ``scipy.stats.wilcoxon(method="auto")`` takes the normal approximation
#: whatever the ties and zeros (at most this many, it looks at them to choose an exact test)
_WILCOXON_EXACT_MAX = 50


def paired_tests(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    zero_method: Literal["pratt", "wilcox", "zsplit"] = "pratt",
) -> list[PairedTestResult]:
    """``[paired_test(x, y, zero_method) for x, y in pairs]``, the same results, faster for many
    comparisons: those with more than 50 complete pairs (normal approximation) and the same number
    of them go to scipy together, one batch along the last axis (each row's statistics are computed
    on its own there, with the same operations); the others one at a time."""
    out: list[PairedTestResult | None] = [None] * len(pairs)
    batches: dict[int, list[tuple[int, np.ndarray]]] = {}
    for i, (x, y) in enumerate(pairs):
        d = _differences(x, y)
        out[i] = _without_scipy(d)
        if out[i] is not None:
            continue
        if d.size > _WILCOXON_EXACT_MAX:
            batches.setdefault(d.size, []).append((i, d))
        else:
            out[i] = paired_test(x, y, zero_method)
    for members in batches.values():
        d = np.stack([di for _, di in members])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            w = scipy.stats.wilcoxon(d, zero_method=zero_method, alternative="two-sided", method="auto", axis=-1)
            t = scipy.stats.ttest_1samp(d, 0.0, alternative="two-sided", axis=-1)
        for k, (i, di) in enumerate(members):
            out[i] = _paired_result(
                di, float(w.statistic[k]), float(w.pvalue[k]), float(t.statistic[k]), float(t.pvalue[k])
            )
    return out  # type: ignore[return-value]


def _differences(scores_x, scores_y) -> np.ndarray:
    """The flattened differences x - y of two (seed, task) layouts, pairs with a NaN dropped."""
    x = np.asarray(scores_x, dtype=float)
    y = np.asarray(scores_y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired_test needs matching (seed, task) layouts, got {x.shape} vs {y.shape}")
    d = (x - y).reshape(-1)
    return d[~np.isnan(d)]


def _paired_result(d: np.ndarray, w_stat: float, w_p: float, t_stat: float, t_p: float) -> PairedTestResult:
    nz = int(np.count_nonzero(d))
    return PairedTestResult(
        int(d.size),
        nz,
        float(d.mean()) if d.size else math.nan,
        float(np.median(d)) if d.size else math.nan,
        w_stat,
        w_p,
        t_stat,
        t_p,
        float(min(1.0, 2.0 ** (1 - nz))) if nz else 1.0,
    )


def _without_scipy(d: np.ndarray) -> PairedTestResult | None:
    """The result where no test runs: fewer than 2 pairs (NaN p-values) or no non-zero difference (1.0)."""
    nan = math.nan
    if d.size < 2:
        return _paired_result(d, nan, nan, nan, nan)
    if not np.count_nonzero(d):
        return _paired_result(d, 0.0, 1.0, 0.0, 1.0)
    return None


def minimum_detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference of means between two methods, each run with ``n`` seeds of
    seed-to-seed standard deviation ``sd``, that a two-sided test at level ``alpha`` detects with
    probability ``power`` (normal approximation: ``(z_{1-alpha/2} + z_{power}) * sd * sqrt(2 / n)``)."""
    if n < 1 or sd < 0:
        raise ValueError(f"need n >= 1 and sd >= 0, got n={n}, sd={sd}")
    z = scipy.stats.norm.ppf(1 - alpha / 2) + scipy.stats.norm.ppf(power)
    return float(z * sd * math.sqrt(2 / n))


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (Holm 1979), in the input order.

    Sort the m p-values ascending ``p_(1) <= ... <= p_(m)``; the adjusted value is
    ``p~_(i) = min(1, max_{j <= i} (m - j + 1) p_(j))``.  Identical to statsmodels'
    ``multipletests(method="holm")[1]``.  NaN entries stay NaN and do not count in m.
    """
    p = np.asarray(pvalues, dtype=float).reshape(-1)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def significant(pvalues: Sequence[float] | np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Which hypotheses Holm's step-down procedure rejects at family-wise level ``alpha``.

    ``holm(pvalues) <= alpha`` -- the same as rejecting ``p_(1), ..., p_(k)`` while
    ``p_(k) <= alpha / (m - k + 1)``.  NaN p-values are never significant.
    """
    adj = holm(pvalues)
    return np.where(np.isnan(adj), False, adj <= alpha)


def holm_can_reject(
    pvalues: Sequence[float] | np.ndarray, min_pvalues: Sequence[float] | np.ndarray, alpha: float = 0.05
) -> bool:
    """Whether Holm at family-wise level ``alpha`` could reject anything, whatever the data.

    Its first step needs the smallest of the m (non-NaN) p-values at or below ``alpha / m``, and no
    test can give less than its ``min_pvalues`` entry (``PairedTestResult.min_wilcoxon_pvalue``): with
    6 pairs each exact p is at least 1/32, so 25 comparisons (``alpha / m`` = 0.002) can never reach
    significance, and only intervals (probability of improvement, IQM) can tell methods apart.
    """
    p = np.asarray(pvalues, dtype=float).reshape(-1)
    floors = np.asarray(min_pvalues, dtype=float).reshape(-1)[~np.isnan(p)]
    return floors.size > 0 and float(floors.min()) <= alpha / floors.size


# --------------------------------------------------------------------------- convergence


def _curve(
    losses: Sequence[float] | np.ndarray, steps: Sequence[float] | np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(losses, dtype=float).reshape(-1)
    x = np.arange(y.size, dtype=float) if steps is None else np.asarray(steps, dtype=float).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"losses and steps differ in length: {y.size} vs {x.size}")
    if y.size == 0:
        raise ValueError("empty loss curve")
    if np.any(np.diff(x) <= 0):
        raise ValueError("steps must be strictly increasing")
    return x, y


def auc(losses: Sequence[float] | np.ndarray, steps: Sequence[float] | np.ndarray | None = None) -> float:
    """Mean training loss over the run: trapezoid area under the loss curve / step span.

    ``trapezoid(losses, steps) / (steps[-1] - steps[0])`` -- the time-average of the
    piecewise-linear loss, so it is comparable across runs logged at different
    intervals (lower = faster convergence).  ``steps`` defaults to 0, 1, ...; a
    single point returns that loss; a NaN/inf loss (diverged run) propagates.
    """
    x, y = _curve(losses, steps)
    if y.size == 1:
        return float(y[0])
    return float(_trapezoid(y, x) / (x[-1] - x[0]))


def ema(losses: Sequence[float] | np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """Exponential moving average ``s_0 = l_0``, ``s_t = alpha l_t + (1 - alpha) s_{t-1}``.

    Seeded with the first loss, so no bias correction is needed; ``alpha = 1`` is
    no smoothing.  NaNs propagate from where they appear.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    y = np.asarray(losses, dtype=float).reshape(-1)
    out = np.empty_like(y)
    acc = math.nan
    for i, v in enumerate(y):
        acc = v if i == 0 else alpha * v + (1.0 - alpha) * acc
        out[i] = acc
    return out


def steps_to_reach(
    losses: Sequence[float] | np.ndarray,
    steps: Sequence[float] | np.ndarray | None,
    target: float,
    alpha: float | None = 0.1,
) -> int | float | None:
    """First step at which the EMA-smoothed loss is <= ``target``; ``None`` if never.

    Smoothing is ``ema(losses, alpha)`` with ``alpha = 0.1`` by default (about a
    10-point time constant, so one lucky batch does not count as reaching the
    target; the lag is the same for every method).  ``alpha=None`` (or 1) uses the
    raw losses.  Returns the value from ``steps`` (index when ``steps`` is None).
    """
    x, y = _curve(losses, steps)
    s = y if alpha is None else ema(y, alpha)
    hit = np.flatnonzero(s <= target)  # NaN compares False
    if hit.size == 0:
        return None
    v = x[hit[0]]
    return int(v) if float(v).is_integer() else float(v)
