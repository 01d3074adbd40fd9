"""Seed statistics: mean and bootstrap CI over seeds, paired comparison of two arms, and the verdict
on a claim.

All randomness comes from a seeded numpy Generator, so every number here is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

LEVEL = 0.95
EXACT_MAX_PAIRS = 16  # up to 2^16 sign patterns are enumerated; beyond that, Monte Carlo
_PERM_CHUNK = 2048  # Monte Carlo sign patterns drawn at once (bounds memory for many pairs)

Verdict = Literal["reproduced", "not reproduced", "inconclusive at this scale"]


@dataclass(frozen=True)
class MeanCI:
    """A mean over seeds with its Student-t interval."""

    mean: float
    std: float  # sample std (ddof=1); 0 for a single value
    lo: float
    hi: float
    n: int


@dataclass(frozen=True)
class PairedComparison:
    """Arm minus baseline over seed pairs: the mean difference, its interval and a permutation p-value."""

    mean_diff: float  # mean of a - b over pairs
    lo: float  # Student-t CI of mean_diff (honest for the few pairs a seed study has)
    hi: float
    p_value: float  # two-sided paired sign-flip permutation test of mean_diff = 0
    exact: bool  # p_value from full enumeration of sign patterns (else Monte Carlo)
    n: int


def _bootstrap_mean_ci(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of x."""
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    means = x[idx].mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return float(lo), float(hi)


def t_quantile(dof: np.ndarray | int) -> np.ndarray:
    """The two-sided 95% Student-t quantile for `dof` degrees of freedom."""
    return stats.t.ppf(0.5 + LEVEL / 2, dof)


def _t_mean_ci(x: np.ndarray) -> tuple[float, float]:
    """Student-t interval of the mean of x: the percentile bootstrap is far too narrow for 3-5 values."""
    if len(x) < 2:
        return -np.inf, np.inf
    half = t_quantile(len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def _as_sample(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=float).ravel()
    if len(x) == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"{what} must be a non-empty array of finite numbers")
    return x


def mean_ci(x: np.ndarray, *, n_boot: int = 10_000, seed: int = 0) -> MeanCI:
    """Mean, std and 95% percentile-bootstrap CI of the mean of x (e.g. one metric over seeds)."""
    x = _as_sample(x, "x")
    lo, hi = _bootstrap_mean_ci(x, n_boot, np.random.default_rng(seed))
    std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return MeanCI(float(x.mean()), std, lo, hi, len(x))


def sign_flip_p_value(
    d: np.ndarray, *, n_perm: int = 20_000, seed: int = 0, exact_max_pairs: int = EXACT_MAX_PAIRS
) -> tuple[float, bool]:
    """Two-sided p-value of mean(d) = 0 under random sign flips of the paired differences d.

    Exact (all 2^n sign patterns) for n <= exact_max_pairs; else Monte Carlo with the observed pattern
    counted in, p = (1 + #{|mean| >= observed}) / (1 + n_perm), which is never 0.
    Returns (p, exact).
    """
    d = _as_sample(d, "differences")
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, np.abs(d).max())  # sign patterns that tie the observed mean count as extreme
    exact = len(d) <= exact_max_pairs
    if exact:
        bits = (np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1
        signs = 1.0 - 2.0 * bits  # row i: the i-th of all 2^n sign patterns
        return float(np.mean(np.abs(signs @ d) / len(d) >= observed - tol)), True
    # A random sign pattern is a string of random bytes; byte j flips the signs of d[8j:8j+8], so a table of
    # the 256 possible sums of those differences per byte turns each pattern into lookups and one sum.
    padded = np.zeros(-(-len(d) // 8) * 8)
    padded[: len(d)] = d
    byte_bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(float)  # (256, 8)
    tables = padded.reshape(-1, 8) @ byte_bits.T  # (bytes, 256): the flipped sum of each byte value
    rng, total, extreme, columns = np.random.default_rng(seed), d.sum(), 0, np.arange(len(tables))
    for start in range(0, n_perm, _PERM_CHUNK):
        packed = rng.integers(0, 256, size=(min(_PERM_CHUNK, n_perm - start), len(tables)), dtype=np.uint8)
        flipped = tables[columns, packed].sum(axis=1)
        extreme += int(np.sum(np.abs(total - 2 * flipped) / len(d) >= observed - tol))
    return float((1 + extreme) / (1 + n_perm)), False


def paired(
    a: np.ndarray,
    b: np.ndarray,
    *,
    n_perm: int = 20_000,
    seed: int = 0,
    exact_max_pairs: int = EXACT_MAX_PAIRS,
) -> PairedComparison:
    """Compare arm a with arm b over matched pairs (same seed / same data): a[i] pairs with b[i]."""
    a, b = _as_sample(a, "a"), _as_sample(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired arms need the same number of values, got {len(a)} and {len(b)}")
    d = a - b
    lo, hi = _t_mean_ci(d)
    p, exact = sign_flip_p_value(d, n_perm=n_perm, seed=seed + 1, exact_max_pairs=exact_max_pairs)
    return PairedComparison(float(d.mean()), lo, hi, p, exact, len(d))


def verdict(diff_ci: tuple[float, float], claim_direction: int) -> Verdict:
    """Verdict on a claim that a difference is positive (claim_direction=+1) or negative (-1):
    "reproduced" when its CI excludes 0 on the claimed side, "not reproduced" when it excludes 0 on
    the other side, "inconclusive at this scale" when it contains 0."""
    if claim_direction not in (1, -1):
        raise ValueError(f"claim_direction must be +1 or -1, got {claim_direction!r}")
    lo, hi = sorted(x * claim_direction for x in diff_ci)
    if lo > 0:
        return "reproduced"
    if hi < 0:
        return "not reproduced"
    return "inconclusive at this scale"


def t_test_p_value(d: np.ndarray) -> float:
    """Two-sided paired Student-t p-value of mean(d) = 0 (1.0 when d has no spread and mean 0; 0.0 when it
    has no spread and a nonzero mean)."""
    d = _as_sample(d, "differences")
    if len(d) < 2:
        return 1.0
    sd = d.std(ddof=1)
    if sd == 0:
        return 1.0 if d.mean() == 0 else 0.0
    return float(2 * stats.t.sf(abs(d.mean()) / (sd / np.sqrt(len(d))), len(d) - 1))


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control, no independence assumed): the i-th
    smallest p times (m - i + 1), made monotone and capped at 1; reject where adjusted < alpha."""
    p = np.asarray(p_values, dtype=float).ravel()
    if len(p) == 0:
        return p
    if np.any(~np.isfinite(p) | (p < 0) | (p > 1)):
        raise ValueError("p-values must be finite numbers in [0, 1]")
    order = np.argsort(p, kind="stable")
    scaled = np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p))))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(scaled, 1.0)
    return adjusted
