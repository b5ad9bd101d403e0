"""Tests for initbench.board.stats: hand-computed cases, scipy agreement, coverage simulations, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from initbench.board import stats

# rliable's own unit-test matrices (tests/rliable/metrics_test.py), runs x tasks.
X_RL = np.array([[1, 2], [2, 2], [1, 1], [2, 1]], dtype=float)
Y_RL = np.array([[1, 1], [2, 2], [3, 3]], dtype=float)


# --------------------------------------------------------------------------- rliable aggregates


def test_iqm_hand_arithmetic():
    # 8 scores -> cut floor(0.25 * 8) = 2 from each end of 0,1,2,3,4,5,10,100 -> mean(2,3,4,5)
    m = np.array([[0, 1], [2, 10], [3, 100], [4, 5]], dtype=float)
    assert stats.aggregate_iqm(m) == pytest.approx(3.5)
    # 10 scores -> cut floor(2.5) = 2 from each end -> mean of the middle six
    m10 = np.array([[9, -50], [1, 7], [3, 8], [2, 6], [99, 4]], dtype=float)  # sorted: -50,1,2,3,4,6,7,8,9,99
    assert stats.aggregate_iqm(m10) == pytest.approx((2 + 3 + 4 + 6 + 7 + 8) / 6)
    assert stats.aggregate_iqm(m10) == pytest.approx(scipy.stats.trim_mean(m10.flatten(), 0.25))


def test_aggregates_match_rliable_definitions():
    # Expected values from rliable's metrics_test.py.
    for m, expect in ((X_RL, 1.5), (Y_RL, 2.0)):
        agg = stats.aggregate_metrics(m)
        assert agg["median"] == pytest.approx(expect)
        assert agg["mean"] == pytest.approx(expect)
        assert agg["iqm"] == pytest.approx(expect)
    # median of per-task means, not of all scores: task means 1, 2, 10 -> 2
    m = np.array([[0, 2, 0], [2, 2, 20]], dtype=float)
    assert stats.aggregate_median(m) == pytest.approx(2.0)
    # optimality gap, gamma=1: min(s, 1) = .5, 1, .8, .9 -> mean .8 -> gap .2
    g = np.array([[0.5, 1.2], [0.8, 0.9]])
    assert stats.aggregate_metrics(g)["optimality_gap"] == pytest.approx(0.2)
    assert stats.aggregate_optimality_gap(g, gamma=2.0) == pytest.approx(2.0 - 0.85)
    with pytest.raises(ValueError):
        stats.aggregate_metrics(np.array([[1.0, np.nan]]))


# --------------------------------------------------------------------------- probability of improvement


def test_probability_of_improvement_with_ties():
    # Task 0: x = 1,2,1,2 vs y = 1,2,3.  x=1: tie(.5) + 0 + 0; x=2: 1 + tie(.5) + 0
    # -> (2 * .5 + 2 * 1.5) / 12 = 1/3; task 1 is the same multiset -> 1/3 (rliable's test value).
    assert stats.probability_of_improvement(X_RL, Y_RL) == pytest.approx(1 / 3)
    assert stats.probability_of_improvement(Y_RL, X_RL) == pytest.approx(2 / 3)
    # identical samples -> 1/2 (rliable's special case falls out of the tie rule)
    assert stats.probability_of_improvement(X_RL, X_RL) == pytest.approx(0.5)
    # against scipy's Mann-Whitney U / (n m), averaged over tasks
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=(5, 3)).astype(float)
    y = rng.integers(0, 4, size=(7, 3)).astype(float)
    u = [scipy.stats.mannwhitneyu(x[:, t], y[:, t]).statistic / (5 * 7) for t in range(3)]
    assert stats.probability_of_improvement(x, y) == pytest.approx(np.mean(u))
    assert stats.probability_of_improvement(x, y) + stats.probability_of_improvement(y, x) == pytest.approx(1.0)


def test_probability_of_improvement_ci():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, size=(6, 4))
    y = rng.normal(0.0, 1.0, size=(5, 4))
    lo, hi = stats.probability_of_improvement_ci(x, y, reps=2000, rng=np.random.default_rng(1))
    p = stats.probability_of_improvement(x, y)
    assert 0.0 <= lo <= p <= hi <= 1.0
    assert (lo, hi) == stats.probability_of_improvement_ci(x, y, reps=2000, rng=np.random.default_rng(1))
    # complete separation survives every resample
    assert stats.probability_of_improvement_ci(x + 100, y, reps=500, rng=0) == (1.0, 1.0)


# --------------------------------------------------------------------------- Holm


def test_holm_known_example():
    # Wikipedia's Holm-Bonferroni example: p = .01, .04, .03, .005 at alpha .05 rejects H1, H4.
    # Hand: sorted .005*4=.02, .01*3=.03, .03*2=.06, .04*1=.04 -> running max .02,.03,.06,.06.
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(stats.holm(p), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_array_equal(stats.significant(p, alpha=0.05), [True, False, False, True])
    np.testing.assert_allclose(stats.holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(stats.holm([0.02]), [0.02])  # m = 1: unadjusted
    adj = stats.holm([0.01, math.nan, 0.02])  # NaN ignored, m = 2
    np.testing.assert_allclose(adj, [0.02, math.nan, 0.02])
    np.testing.assert_array_equal(stats.significant([0.01, math.nan, 0.02]), [True, False, True])
    assert stats.holm([]).shape == (0,)


def test_significant_equals_step_down_procedure():
    rng = np.random.default_rng(7)
    for _ in range(200):
        m = int(rng.integers(1, 9))
        p = rng.uniform(0, 0.2, size=m) ** 2
        alpha = 0.05
        order = np.argsort(p)
        reject = np.zeros(m, dtype=bool)
        for k, i in enumerate(order):  # reject while p_(k) <= alpha / (m - k)
            if p[i] > alpha / (m - k):
                break
            reject[i] = True
        np.testing.assert_array_equal(stats.significant(p, alpha), reject)


# --------------------------------------------------------------------------- paired test


def test_paired_test():
    y = np.zeros((2, 5))
    x = np.arange(1, 11, dtype=float).reshape(2, 5)  # 10 distinct positive differences
    r = stats.paired_test(x, y)
    assert (r.n_pairs, r.n_nonzero) == (10, 10)
    assert r.wilcoxon_pvalue == pytest.approx(2 / 2**10)  # exact: only the all-positive sign pattern and its mirror
    assert r.min_wilcoxon_pvalue == pytest.approx(2 / 2**10)
    assert r.t_pvalue == pytest.approx(scipy.stats.ttest_rel(x.ravel(), y.ravel()).pvalue)
    assert r.mean_diff == pytest.approx(5.5)
    # few pairs: 3 non-zero differences can never go below p = 2 / 2**3
    r3 = stats.paired_test([[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]])
    assert r3.wilcoxon_pvalue == pytest.approx(0.25) and r3.min_wilcoxon_pvalue == pytest.approx(0.25)
    # all ties with the reference -> no evidence
    same = stats.paired_test(x, x)
    assert same.wilcoxon_pvalue == 1.0 and same.t_pvalue == 1.0 and same.n_nonzero == 0
    # zero differences are kept by Pratt's method (scipy's zero_method="pratt"); NaN pairs dropped
    xz = np.array([[0.0, 1.0, 2.0, 0.0, 3.0, 5.0, np.nan, -1.0]])
    rz = stats.paired_test(xz, np.zeros_like(xz))
    dz = np.array([0.0, 1.0, 2.0, 0.0, 3.0, 5.0, -1.0])
    assert rz.n_pairs == 7 and rz.n_nonzero == 5
    assert rz.wilcoxon_pvalue == pytest.approx(scipy.stats.wilcoxon(dz, zero_method="pratt").pvalue)
    one = stats.paired_test([[1.0]], [[0.0]])
    assert math.isnan(one.wilcoxon_pvalue) and math.isnan(one.t_pvalue)
    with pytest.raises(ValueError):
        stats.paired_test(np.zeros((2, 3)), np.zeros((3, 2)))


# --------------------------------------------------------------------------- normalization


def test_normalize_edge_cases():
    floor = np.array([0.25, 0.5, 10.0])
    ceiling = np.array([0.75, 1.0, 2.0])  # task 2 lower-is-better (e.g. perplexity)
    scores = np.array([[0.25, 1.0, 2.0], [0.5, 0.75, 6.0]])
    np.testing.assert_allclose(stats.normalize(scores, floor, ceiling), [[0.0, 1.0, 1.0], [0.5, 0.5, 0.5]])
    assert stats.normalize(0.9, 0.5, 1.0) == pytest.approx(0.8)  # above ceiling may exceed 1 / below floor < 0
    assert stats.normalize(0.4, 0.5, 1.0) == pytest.approx(-0.2)
    with pytest.warns(RuntimeWarning, match="ceiling == floor"):
        out = stats.normalize(scores, floor, np.array([0.75, 0.5, 2.0]))
    assert np.isnan(out[:, 1]).all() and np.isfinite(out[:, [0, 2]]).all()


def test_best_reference():
    ref = stats.best_reference(
        {
            "base": np.array([[9.0, 9.0]]),
            "lora": np.array([[1.0, 4.0], [3.0, np.nan]]),
            "pissa": np.array([[1.0, 1.0]]),
        },
        higher_is_better=[True, False],
    )
    np.testing.assert_allclose(ref, [2.0, 1.0])  # lora mean (2, 4) vs pissa (1, 1); base excluded


# --------------------------------------------------------------------------- bootstrap of the mean


def test_bootstrap_ci_matches_scipy():
    x = np.array([0.61, 0.58, 0.66, 0.70, 0.55, 0.63, 0.59])
    for ours, theirs in (("percentile", "percentile"), ("bca", "BCa")):
        got = stats.bootstrap_ci(x, 0.95, method=ours, n_resamples=2000, rng=np.random.default_rng(42))
        ref = scipy.stats.bootstrap(
            (x,), np.mean, n_resamples=2000, confidence_level=0.95, method=theirs, rng=np.random.default_rng(42)
        ).confidence_interval
        assert got == (ref.low, ref.high)
    lo, hi = stats.bootstrap_ci(x, 0.9, method="bca", n_resamples=2000, rng=1)
    assert lo < x.mean() < hi


def test_bootstrap_ci_degenerate():
    assert all(math.isnan(v) for v in stats.bootstrap_ci([0.7]))
    assert all(math.isnan(v) for v in stats.bootstrap_ci([]))
    assert stats.bootstrap_ci([0.5, 0.5, 0.5], method="bca") == (0.5, 0.5)
    assert stats.bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    with_nan = stats.bootstrap_ci([0.1, np.nan, 0.3, 0.2], n_resamples=500, rng=3)
    assert with_nan == stats.bootstrap_ci([0.1, 0.3, 0.2], n_resamples=500, rng=3)
    with pytest.raises(ValueError):
        stats.bootstrap_ci([1.0, 2.0], method="bootstrap-t")


def test_task_summary():
    m = np.array([[0.5, 0.2, 1.0, 0.3], [0.7, 0.2, np.nan, 0.1], [0.6, 0.2, np.nan, 0.8], [0.9, 0.2, np.nan, 0.4]])
    s = stats.task_summary(m, n_resamples=1000, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(s.n, [4, 4, 1, 4])
    np.testing.assert_allclose(s.mean, [0.675, 0.2, 1.0, 0.4])
    assert s.std[0] == pytest.approx(np.std(m[:, 0], ddof=1)) and math.isnan(s.std[2])
    # task 0 consumes the fresh generator first, so it equals scipy with the same seed
    ref = scipy.stats.bootstrap(
        (m[:, 0],), np.mean, n_resamples=1000, method="percentile", rng=np.random.default_rng(5)
    ).confidence_interval
    np.testing.assert_allclose(s.ci_percentile[0], [ref.low, ref.high])
    ref_bca = scipy.stats.bootstrap(
        (m[:, 0],), np.mean, n_resamples=1000, method="BCa", rng=np.random.default_rng(5)
    ).confidence_interval
    np.testing.assert_allclose(s.ci_bca[0], [ref_bca.low, ref_bca.high])
    np.testing.assert_allclose(s.ci_percentile[1], [0.2, 0.2])  # constant
    assert np.isnan(s.ci_percentile[2]).all() and np.isnan(s.ci_bca[2]).all()  # one seed


def test_percentile_bootstrap_coverage():
    # n = 10 seeds from N(0.6, 0.05): the percentile bootstrap under-covers a little at this n
    # (about 0.91-0.92 expected); 600 trials give a simulation s.e. of about 0.011.
    rng = np.random.default_rng(2024)
    mu, trials = 0.6, 600
    hits = 0
    for _ in range(trials):
        lo, hi = stats.bootstrap_ci(rng.normal(mu, 0.05, size=10), n_resamples=999, rng=rng)
        hits += lo <= mu <= hi
    assert 0.88 <= hits / trials <= 0.99


# --------------------------------------------------------------------------- stratified bootstrap


def test_stratified_bootstrap_iqm_coverage():
    # 10 runs x 5 tasks, task means symmetric about 0.5 and equal spread: the pooled (mixture)
    # score distribution is symmetric about 0.5, so its interquartile mean is exactly 0.5.
    rng = np.random.default_rng(11)
    task_means = np.array([0.3, 0.4, 0.5, 0.6, 0.7])
    trials, hits = 400, 0
    for _ in range(trials):
        m = task_means + rng.normal(0.0, 0.1, size=(10, 5))
        lo, hi = stats.stratified_bootstrap_ci(m, stats.aggregate_iqm, reps=500, rng=rng)
        hits += lo <= 0.5 <= hi
    assert 0.88 <= hits / trials <= 0.99


def test_stratified_bootstrap_resamples_within_task():
    # each task column constant -> every stratified resample is the original matrix -> zero width
    const_cols = np.tile(np.array([0.1, 0.5, 0.9]), (6, 1))
    for fn in (stats.aggregate_iqm, stats.aggregate_mean, stats.aggregate_median, stats.aggregate_optimality_gap):
        lo, hi = stats.stratified_bootstrap_ci(const_cols, fn, reps=300, rng=0)
        assert lo == pytest.approx(fn(const_cols)) and hi == pytest.approx(fn(const_cols))
    # the transpose pattern (each *run* constant across tasks) varies between resamples
    const_rows = const_cols.T.repeat(2, axis=0)  # (6, 3): rows .1,.1,.5,.5,.9,.9
    lo, hi = stats.stratified_bootstrap_ci(const_rows, stats.aggregate_mean, reps=300, rng=0)
    assert hi - lo > 0.05

    # every resampled column draws only from its own task's runs
    m = np.arange(24, dtype=float).reshape(6, 4)  # distinct values per column
    cols = [set(m[:, j]) for j in range(4)]

    def check(r: np.ndarray) -> float:
        assert r.shape == m.shape
        assert all(set(r[:, j]) <= cols[j] for j in range(4))
        return float(r.mean())

    stats.stratified_bootstrap_ci(m, check, reps=200, rng=0, vectorized=False)


def test_stratified_bootstrap_vectorized_equals_loop_and_is_seeded():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(5, 3))
    fast = stats.stratified_bootstrap_ci(m, stats.aggregate_iqm, reps=400, rng=np.random.default_rng(9))
    slow = stats.stratified_bootstrap_ci(m, lambda s: stats.aggregate_iqm(s), reps=400, rng=np.random.default_rng(9))
    assert fast == pytest.approx(slow)
    assert fast == stats.stratified_bootstrap_ci(m, stats.aggregate_iqm, reps=400, rng=np.random.default_rng(9))
    lo, hi = stats.stratified_bootstrap_ci(m, stats.aggregate_iqm, reps=400, confidence=0.5, rng=1)
    lo95, hi95 = stats.stratified_bootstrap_ci(m, stats.aggregate_iqm, reps=400, confidence=0.95, rng=1)
    assert lo95 <= lo <= hi <= hi95
    # vector-valued aggregate -> array bounds
    vlo, vhi = stats.stratified_bootstrap_ci(m, lambda s: np.array([np.mean(s), np.median(s)]), reps=200, rng=0)
    assert vlo.shape == (2,) and np.all(vlo <= vhi)
    # one run per task: nothing to resample
    assert stats.stratified_bootstrap_ci(m[:1], stats.aggregate_mean, reps=50, rng=0) == pytest.approx(
        (m[0].mean(), m[0].mean())
    )


# --------------------------------------------------------------------------- convergence


def test_auc_linear_curve():
    steps = np.arange(0, 101)
    losses = 3.0 - 0.01 * steps  # 3 -> 2 linearly: mean loss 2.5
    assert stats.auc(losses, steps) == pytest.approx(2.5)
    uneven = np.array([10, 20, 50, 110])
    assert stats.auc(3.0 - 0.01 * uneven, uneven) == pytest.approx(3.0 - 0.01 * 60)  # midpoint of [10, 110]
    assert stats.auc([1.0, 3.0]) == pytest.approx(2.0)  # default steps 0, 1
    assert stats.auc([1.7]) == pytest.approx(1.7)
    with pytest.raises(ValueError):
        stats.auc([1.0, 2.0], [1, 1])


def test_steps_to_reach():
    steps = [10, 20, 30, 40, 50]
    losses = [5.0, 4.0, 3.0, 2.0, 1.0]
    assert stats.steps_to_reach(losses, steps, 3.0, alpha=None) == 30  # "at or below"
    assert stats.steps_to_reach(losses, steps, 0.5, alpha=None) is None
    # EMA alpha=.5 of 4,0,0,0 is 4,2,1,.5 -> reaches 1 at index 2
    np.testing.assert_allclose(stats.ema([4.0, 0.0, 0.0, 0.0], 0.5), [4.0, 2.0, 1.0, 0.5])
    assert stats.steps_to_reach([4.0, 0.0, 0.0, 0.0], None, 1.0, alpha=0.5) == 2
    # one lucky batch: the raw curve touches the target, the default EMA (alpha=.1) does not
    spike = [5.0, 5.0, 0.0, 5.0, 5.0, 5.0]
    assert stats.steps_to_reach(spike, None, 1.0, alpha=None) == 2
    assert stats.steps_to_reach(spike, None, 1.0) is None
    assert stats.steps_to_reach([2.0, 1.0, 0.5], [0.5, 1.0, 1.5], 1.0, alpha=None) == 1.0


def test_minimum_detectable_difference_matches_a_simulated_power():
    """At the returned difference a two-sided z-test with known sd rejects in ~80% of simulated trials."""
    from initbench.board.stats import minimum_detectable_difference

    sd, n = 0.1, 3
    mdd = minimum_detectable_difference(sd, n)
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, sd, (20000, n)).mean(1)
    b = rng.normal(mdd, sd, (20000, n)).mean(1)
    rejected = np.abs(b - a) / (sd * np.sqrt(2 / n)) > 1.959964
    assert abs(rejected.mean() - 0.8) < 0.01
    assert math.isclose(minimum_detectable_difference(0.106, 3), 0.2426, abs_tol=5e-4)  # issue 13's 24 points


@pytest.mark.parametrize("pairs", [5, 6, 8, 10])
@pytest.mark.parametrize("comparisons", [1, 4, 11, 25])
def test_holm_can_reject_iff_the_best_possible_data_is_significant(pairs, comparisons):
    """The best case for Holm: every method beats the reference on every pair, so each exact Wilcoxon p
    is as small as it gets (scipy's, not our formula); Holm rejects then iff holm_can_reject says it can."""
    best = scipy.stats.wilcoxon(np.arange(1.0, pairs + 1), alternative="two-sided", method="exact").pvalue
    tests = [stats.paired_test(np.arange(1.0, pairs + 1)[:, None] + 1, np.ones((pairs, 1))) for _ in range(comparisons)]
    assert all(t.wilcoxon_pvalue == pytest.approx(best) for t in tests)
    p_values, floors = [t.wilcoxon_pvalue for t in tests], [t.min_wilcoxon_pvalue for t in tests]
    rejected = stats.significant(p_values, 0.05).any()
    assert stats.holm_can_reject(p_values, floors, 0.05) == rejected
    assert rejected == (best * comparisons <= 0.05)


def test_holm_can_reject_ignores_comparisons_without_a_p_value():
    assert stats.holm_can_reject([0.5, math.nan], [2.0**-9, 2.0**-9], 0.05)  # m = 1: 1/512 <= 0.05
    assert not stats.holm_can_reject([math.nan], [0.001], 0.05)
    assert not stats.holm_can_reject([0.03, 0.03, 0.5], [1 / 32, 1 / 32, 1 / 32], 0.05)  # 1/32 > 0.05 / 3
