"""The percentiles of each row's bootstrap means, exactly as ``np.quantile`` gives them, fast.

``quantiles_of_means(x, counts, q)`` is ``np.quantile(x @ (counts.T / n), q, axis=1)`` for sorted rows
``x`` (one per leaderboard cell: its n seed values) and ``reps`` resamples (``counts``: how often each
value is drawn), the products taken in chunks of rows as ``leaderboard.bootstrap_cells`` first took
them: the same numbers, bit for bit, without sorting every row's ``reps`` means (see the function).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_SAMPLE = 256  # a row's means sampled for a threshold, and kept beyond it at most
_CANDIDATES = 256  # the means read first at each end of the proxy order (numpy sorts up to 256 with SIMD networks)
_BLOCK = 128  # rows per block product: a block's means stay in the CPU cache while its tails are read
_PROXY_ROWS = 512  # rows of similar shape sharing one proxy order of the resamples (a multiple of _BLOCK)
_CHUNK_ELEMENTS = 4_000_000  # bootstrap means per chunk product (the chunks the intervals were first drawn in)


def quantiles_of_means(x: np.ndarray, counts: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.quantile(x @ (counts.T / n), q, axis=1)`` for two quantiles ``q`` (one below, one above the
    median), the products taken in chunks of ``_CHUNK_ELEMENTS`` means: the percentiles of each row's
    bootstrap means, one mean per resample.  The same numbers, computed faster:

    * the means: a chunk's rows are taken in the order of their shape (the mean of each row scaled to
      run from 0 to 1), in groups of ``_PROXY_ROWS``; per group, the resamples are put in the order of
      the mean they give the group's average scaled row (a proxy), and the products are taken per
      block of ``_BLOCK`` rows, whose means stay in the CPU cache.  A product computes each entry on
      its own, so these are the chunk product's entries in another order; that is checked entry by
      entry on the first chunk, and where it does not hold, the chunk products are used as drawn;
    * the quantiles: ``np.quantile`` interpolates between two order statistics at each end.  They are
      read off the ``_CANDIDATES`` means at that end of the proxy order, sorted, once every other
      mean of the row is checked to lie beyond them.  Where the check fails, every mean beyond a
      threshold set by an even sample of the row's means is gathered and sorted (``_tail``); a row
      with a NaN, an infinity or a value that could overflow gets ``np.quantile`` itself.  The
      interpolation is numpy's formula (``_lerp``)."""
    reps, n = counts.shape
    chunk = max(1, _CHUNK_ELEMENTS // reps)
    weights = counts.T / n  # (n, reps): the resamples as drawn
    virtual = (reps - 1) * q  # np.quantile's "linear" method: the order statistics it interpolates between
    below = np.floor(virtual).astype(int)
    gamma = virtual - np.floor(virtual)
    need = (int(below[0]) + 2, reps - int(below[1]))  # the lowest means the lower quantile needs, the highest the upper
    if len(x) < 2 or 4 * _SAMPLE > reps or not 0 < q[0] < 0.5 < q[1] < 1 or 2 * max(need) > _CANDIDATES:
        return _chunked_quantiles(x, weights, q, chunk)
    tails = _Tails(q, gamma, below, need, reps)
    low, high = np.empty(len(x)), np.empty(len(x))
    means = np.empty((min(_BLOCK + 1, len(x)), reps))  # a block's means, reused
    blockwise, checked = True, False
    for start in range(0, len(x), chunk):
        rows = x[start : start + chunk]
        at = slice(start, start + len(rows))
        if len(rows) == 1:  # a one-row product is another BLAS routine (gemv): as drawn
            low[at], high[at] = _chunked_quantiles(rows, weights, q, chunk)
            continue
        plain = None if checked else rows @ weights
        if blockwise:
            scaled = _scaled(rows)
            by_shape = np.argsort(scaled.mean(axis=1), kind="stable")  # the chunk's rows, similar ones together
            unusual = ~(np.abs(rows).max(axis=1) < 1e300)  # a NaN, an infinity, or a value that could overflow
            redo: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # rows not settled: where, means, which tail
            group_end = 0
            for a, b in _blocks(len(rows)):
                if a >= group_end:  # the next group of rows: its proxy order
                    group_end = a + _PROXY_ROWS
                    order = np.argsort(counts @ scaled[by_shape[a:group_end]].mean(axis=0), kind="stable")
                    ordered = counts[order].T / n
                block = by_shape[a:b]  # the rows of this block, as positions in the chunk
                m = np.matmul(rows[block], ordered, out=means[: b - a])
                if plain is not None and not _same_means(m, plain[block][:, order]):
                    blockwise = False
                    break
                low[start + block], high[start + block], settled = tails.ordered(m)
                settled[unusual[block]] = False
                unsettled = np.flatnonzero(~settled.all(axis=1))
                if unsettled.size:
                    redo.append((block[unsettled], m[unsettled], ~settled[unsettled]))
            checked = True
            if blockwise and redo:
                where = np.concatenate([r for r, _, _ in redo])
                m = np.concatenate([m for _, m, _ in redo])
                sides = np.concatenate([s for _, _, s in redo])
                lo, hi = tails.sampled(m, m[:, :: reps // _SAMPLE + 1], sides)  # proxy order: sample it evenly
                lo = np.where(sides[:, 0], lo, low[start + where])
                hi = np.where(sides[:, 1], hi, high[start + where])
                low[start + where], high[start + where] = tails.checked(rows[where], m, lo, hi)
        if not blockwise:
            m = rows @ weights if plain is None else plain  # in the order drawn: the first resamples are a sample
            low[at], high[at] = tails.checked(rows, m, *tails.sampled(m, m[:, :_SAMPLE]))
    return low, high


def _same_means(m: np.ndarray, reference: np.ndarray) -> bool:
    """Whether block products in proxy order gave exactly the chunk product's means."""
    return np.array_equal(m, reference, equal_nan=True)


def _scaled(x: np.ndarray) -> np.ndarray:
    """Sorted rows, each scaled to run from 0 to 1 (a constant row, or one with a NaN, counts as 0s)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = (x - x[:, :1]) / (x[:, -1:] - x[:, :1])
    scaled[~np.isfinite(scaled)] = 0.0
    return scaled


def _blocks(rows: int) -> list[tuple[int, int]]:
    """Row ranges of ``_BLOCK`` rows (the last one longer rather than a single row)."""
    edges = list(range(0, rows, _BLOCK)) + [rows]
    if len(edges) > 2 and edges[-1] - edges[-2] == 1:
        del edges[-2]
    return list(zip(edges[:-1], edges[1:]))


@dataclass(frozen=True)
class _Tails:
    """The two quantiles of each row's means from its extreme means (``quantiles_of_means``)."""

    q: np.ndarray
    gamma: np.ndarray
    below: np.ndarray  # np.quantile's lower neighbour per quantile (position among the sorted means)
    need: tuple[int, int]  # the lowest means the lower quantile needs, the highest the upper one
    reps: int

    def ordered(self, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """From means ``m`` whose first and last ``_CANDIDATES`` columns are the likely lowest and
        highest: the two quantiles, and whether they are settled (every other mean lies beyond the
        candidates needed, so the candidates' order statistics are the row's).  Sorts the candidates
        in place (each end among itself: every set of columns read after keeps its values)."""
        first, last = m[:, :_CANDIDATES], m[:, -_CANDIDATES:]  # apart: 2 * _CANDIDATES <= reps
        first.sort(axis=1)
        last.sort(axis=1)
        top = _CANDIDATES - self.need[1]  # the upper quantile's lower neighbour in ``last``
        middle = m[:, _CANDIDATES:-_CANDIDATES]  # each mean read once for its minimum and once for its maximum
        # the ends are sorted: their extremes are their first and last columns (a row with a NaN is
        # unsettled by its caller, whatever this says)
        settled = np.stack(
            [
                np.minimum(middle.min(axis=1, initial=np.inf), last[:, 0]) >= first[:, self.need[0] - 1],
                np.maximum(middle.max(axis=1, initial=-np.inf), first[:, -1]) <= last[:, top],
            ],
            axis=1,
        )
        return *self._interpolate(first, last[:, top:]), settled

    def sampled(
        self, m: np.ndarray, sample: np.ndarray, sides: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Through ``_tail``, with thresholds at low and high order statistics of a random ``sample`` of
        each row's means (where about 2.5 times the means needed lie beyond them); ``sides`` (rows, 2):
        the tails to read (default both; the others come back NaN, as do those ``_tail`` cannot read)."""
        size = sample.shape[1]
        pick = [round(2.5 * k * size / self.reps) for k in self.need]
        sample = np.sort(sample, axis=1)
        sides = np.ones((len(m), 2), bool) if sides is None else sides
        lowest = np.full((len(m), self.need[0]), np.nan)
        highest = np.full((len(m), self.need[1]), np.nan)
        for rows, out, top in (
            (np.flatnonzero(sides[:, 0]), lowest, False),
            (np.flatnonzero(sides[:, 1]), highest, True),
        ):
            if rows.size:
                threshold = sample[rows, size - 1 - pick[1]] if top else sample[rows, pick[0]]
                out[rows] = _tail(m[rows], threshold, out.shape[1], top=top)
        return self._interpolate(lowest, highest)

    def _interpolate(self, lowest: np.ndarray, highest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``lowest``: each row's lowest means, ascending, from its first; ``highest``: its ``need[1]``
        highest, ascending."""
        with np.errstate(invalid="ignore"):  # inf - inf in a row that goes to np.quantile
            return (
                _lerp(lowest[:, self.below[0]], lowest[:, self.below[0] + 1], self.gamma[0]),
                _lerp(highest[:, 0], highest[:, 1], self.gamma[1]),
            )

    def checked(self, x: np.ndarray, m: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """np.quantile itself for the rows not read off their tails, and for rows with a NaN mean (its
        result is NaN) or a value that could overflow."""
        redo = np.flatnonzero(np.isnan(low) | np.isnan(high) | ~(np.abs(x).max(axis=1) < 1e300))
        if redo.size:
            low[redo], high[redo] = np.quantile(m[redo], self.q, axis=1)
        return low, high


def _tail(m: np.ndarray, threshold: np.ndarray, k: int, *, top: bool) -> np.ndarray:
    """Per row of ``m``, its ``k`` lowest values (``top``: highest), ascending, read off the values
    beyond the row's ``threshold`` (one of the row's values) and the threshold's ties; a row of NaN
    where more than ``_SAMPLE`` values lie beyond it or fewer than ``k`` at or beyond it."""
    flat = np.flatnonzero(m > threshold[:, None] if top else m < threshold[:, None])
    rows = flat // m.shape[1]
    beyond = np.bincount(rows, minlength=len(m))
    fits = beyond <= _SAMPLE
    short = np.flatnonzero(fits & (beyond < k))  # the rest of the k must be ties of the threshold
    if short.size:
        ties = np.count_nonzero(m[short] == threshold[short, None], axis=1)
        fits[short[beyond[short] + ties < k]] = False
    width = max(k, int(beyond[fits].max(initial=0)))
    place = rows * width + np.arange(len(flat)) - (np.cumsum(beyond) - beyond)[rows]
    if not fits.all():
        keep = fits[rows]
        flat, place = flat[keep], place[keep]
    padded = np.repeat(threshold[:, None], width, axis=1)  # the values beyond it, then copies of it
    padded.ravel()[place] = m.ravel()[flat]
    padded.sort(axis=1)
    out = padded[:, width - k :] if top else padded[:, :k]
    out[~fits] = np.nan
    return out


def _chunked_quantiles(x: np.ndarray, weights: np.ndarray, q: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.quantile(x @ weights, q, axis=1)`` in chunks of rows."""
    out = [np.quantile(x[start : start + chunk] @ weights, q, axis=1) for start in range(0, len(x), chunk)]
    return np.concatenate([lo for lo, _ in out]), np.concatenate([hi for _, hi in out])


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """np.quantile's linear interpolation from ``a`` towards ``b`` by ``t`` (numpy's own two-sided
    formula, so the same floating-point result)."""
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t
