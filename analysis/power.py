"""Power of paired comparisons over seeds, and the seeds a comparison needs: for a difference (two-sided paired
t-test) and for equivalence within a margin (two one-sided tests, TOST), at a stated effect, paired standard
deviation, significance level and power.

- Difference: the t statistic of n paired differences with mean `effect` and sd `sd` is noncentral t with n - 1
  degrees of freedom and noncentrality effect * sqrt(n) / sd; power is the chance it falls beyond the two-sided
  critical value.
- Equivalence: TOST declares |difference| < margin when the (1 - 2 alpha) interval lies inside (-margin, margin).
  Given the sample sd s, that happens when the mean lies within margin - t s / sqrt(n) of 0; its power integrates
  that normal probability over the chi distribution of s (exact, not an approximation).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, stats

MAX_SEEDS = 10_000


def difference_power(n: int, effect: float, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level `alpha` with n pairs, a true mean difference `effect` and
    paired standard deviation `sd`."""
    if n < 2:
        return 0.0
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = effect * math.sqrt(n) / sd
    power = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    if not math.isfinite(power):  # scipy's noncentral t fails far in the tail: the normal limit is exact there
        power = stats.norm.sf(crit - nc) + stats.norm.cdf(-crit - nc)
    return float(power)


def equivalence_power(n: int, true_diff: float, margin: float, sd: float, alpha: float = 0.05) -> float:
    """Power of TOST at level `alpha` (each one-sided test) to declare equivalence within +-margin with n pairs,
    when the true mean difference is `true_diff` and the paired standard deviation `sd`."""
    if n < 2:
        return 0.0
    df = n - 1
    crit = stats.t.ppf(1 - alpha, df)
    se = sd / math.sqrt(n)
    s_max = margin * math.sqrt(n) / crit  # beyond it the interval cannot fit inside the margin

    def given_s(s: float) -> float:
        half = margin - crit * s / math.sqrt(n)
        p = stats.norm.cdf((half - true_diff) / se) - stats.norm.cdf((-half - true_diff) / se)
        # s^2 (n - 1) / sd^2 ~ chi2(df): density of s
        return p * stats.chi2.pdf(s * s * df / sd ** 2, df) * 2 * s * df / sd ** 2

    value, _ = integrate.quad(given_s, 0.0, s_max, limit=200)
    return float(min(1.0, max(0.0, value)))


def seeds_needed(effect: float, sd: float, alpha: float = 0.05, power: float = 0.8, *, margin: float | None = None,
                 max_seeds: int = MAX_SEEDS) -> int | None:
    """The fewest pairs (at least 2) with the stated power: for a difference when `margin` is None, else for
    equivalence within +-margin at a true difference `effect`. None when even `max_seeds` is not enough (an
    equivalence question whose true difference is at or beyond the margin never is)."""
    if sd <= 0:
        return 2
    if margin is not None and abs(effect) >= margin:
        return None
    power_at = (lambda n: difference_power(n, effect, sd, alpha)) if margin is None else \
        (lambda n: equivalence_power(n, effect, margin, sd, alpha))
    hi = 2
    while power_at(hi) < power:  # doubling, then bisection: power rises with n
        if hi >= max_seeds:
            return None
        hi = min(2 * hi, max_seeds)
    lo = max(2, hi // 2)
    while lo < hi:
        mid = (lo + hi) // 2
        if power_at(mid) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


def paired_sd(differences: np.ndarray) -> float:
    """The sample standard deviation of paired differences (NaN with fewer than 2)."""
    d = np.asarray(differences, dtype=float)
    return float(d.std(ddof=1)) if len(d) > 1 else float("nan")
