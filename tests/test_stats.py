"""Seed statistics: CI coverage, the paired sign-flip test, verdicts."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from analysis import stats


def test_mean_ci_basic_values():
    r = stats.mean_ci([1.0, 2.0, 3.0, 4.0], n_boot=2000)
    assert (r.mean, r.n) == (2.5, 4)
    assert r.std == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert 1.0 <= r.lo < 2.5 < r.hi <= 4.0
    assert stats.mean_ci([1.0, 2.0, 3.0, 4.0], n_boot=2000) == r  # seeded
    single = stats.mean_ci([0.7])
    assert (single.std, single.lo, single.hi) == (0.0, 0.7, 0.7)
    with pytest.raises(ValueError):
        stats.mean_ci([1.0, np.nan])


def test_mean_ci_covers_the_true_mean_at_about_the_nominal_rate():
    # 400 normal samples of n=20. The percentile bootstrap undercovers a little at this n: it acts like
    # a z interval with the ddof=0 std, so its coverage is P(|t_19| <= 1.96 sqrt(19/20)) = 0.929.
    # The count is ~ Binomial(400, p): at p=0.929, P(count < 350) = 3e-5; an interval covering only
    # 82% passes with probability 0.002.
    rng = np.random.default_rng(0)
    covered = sum(
        r.lo <= 5.0 <= r.hi
        for r in (stats.mean_ci(rng.normal(5.0, 2.0, 20), n_boot=2000, seed=i) for i in range(400))
    )
    assert 350 <= covered <= 395


def test_paired_clear_shift_is_significant():
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 1.0, 10)
    b = a - 1.0 + rng.normal(0.0, 0.3, 10)  # arm a better by 1 on matched seeds
    r = stats.paired(a, b)
    assert r.exact and r.n == 10
    assert r.mean_diff == pytest.approx(np.mean(a - b))
    assert 0 < r.lo < r.mean_diff < r.hi
    assert r.p_value == pytest.approx(2 / 2**10)  # only the observed signs and their mirror are as extreme


def test_paired_p_values_are_uniformish_without_a_shift():
    # under the null, P(p <= 0.05) <= 0.05; 300 tests give a count ~ Binomial(300, <=0.05), mean <= 15
    rng = np.random.default_rng(2)
    ps = np.array(
        [stats.paired(rng.normal(size=8), rng.normal(size=8)).p_value for _ in range(300)]
    )
    assert np.mean(ps <= 0.05) <= 0.09
    assert 0.4 <= ps.mean() <= 0.6
    assert np.mean(ps <= 0.5) == pytest.approx(0.5, abs=0.1)


def test_exact_and_monte_carlo_p_values_agree():
    rng = np.random.default_rng(3)
    d = rng.normal(0.5, 1.0, 12)
    exact, is_exact = stats.sign_flip_p_value(d)
    mc, mc_exact = stats.sign_flip_p_value(d, n_perm=40_000, exact_max_pairs=0)
    assert is_exact and not mc_exact
    # Monte Carlo sd is sqrt(p(1-p)/40000) <= 0.0025; 0.01 is 4 sd
    assert mc == pytest.approx(exact, abs=0.01)
    many, many_exact = stats.sign_flip_p_value(rng.normal(size=40))
    assert not many_exact and 0 < many <= 1


def test_paired_rejects_unmatched_arms():
    with pytest.raises(ValueError, match="same number"):
        stats.paired([1.0, 2.0], [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    ("ci", "direction", "expected"),
    [
        ((0.1, 0.5), 1, "reproduced"),
        ((-0.5, -0.1), 1, "not reproduced"),
        ((-0.1, 0.5), 1, "inconclusive at this scale"),
        ((-0.5, -0.1), -1, "reproduced"),
        ((0.1, 0.5), -1, "not reproduced"),
        ((-0.5, 0.1), -1, "inconclusive at this scale"),
        ((0.0, 0.5), 1, "inconclusive at this scale"),  # touching 0 does not exclude it
    ],
)
def test_verdict(ci, direction, expected):
    assert stats.verdict(ci, direction) == expected


def test_verdict_rejects_bad_direction():
    with pytest.raises(ValueError):
        stats.verdict((0.1, 0.2), 0)


def test_t_test_p_value_matches_scipy_and_handles_no_spread():
    d = np.array([0.03, 0.05, 0.01, 0.04, 0.02])
    assert stats.t_test_p_value(d) == pytest.approx(scipy_stats.ttest_1samp(d, 0.0).pvalue)
    assert stats.t_test_p_value(np.zeros(5)) == 1.0
    assert stats.t_test_p_value(np.full(5, 0.1)) == 0.0


def test_holm_adjusts_step_down_and_keeps_order():
    # hand-worked: sorted p = .01, .02, .04 -> .03, .04, .04 (monotone), in the input's order
    adjusted = stats.holm(np.array([0.04, 0.01, 0.02]))
    np.testing.assert_allclose(adjusted, [0.04, 0.03, 0.04])
    assert stats.holm(np.array([0.5, 0.9])).max() == 1.0
    with pytest.raises(ValueError, match="p-values"):
        stats.holm(np.array([0.1, float("nan")]))


def test_holm_controls_the_family_wise_error_under_the_null():
    rng = np.random.default_rng(0)
    false_alarms = sum(bool((stats.holm(rng.uniform(size=12)) < 0.05).any()) for _ in range(4000))
    assert false_alarms / 4000 < 0.06  # at most alpha (Bonferroni-like), up to sampling noise
    uncorrected = sum(bool((rng.uniform(size=12) < 0.05).any()) for _ in range(4000))
    assert uncorrected / 4000 > 0.4  # 1 - 0.95^12 = 0.46: the correction is doing something
