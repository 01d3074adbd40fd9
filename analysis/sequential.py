"""Group-sequential decisions on paired comparisons: seeds are added in waves, and after each wave (a look) every
open comparison is tested against a pre-registered boundary, so that looking repeatedly keeps the error rates.

The boundaries come from an alpha-spending function (Lan & DeMets): by information fraction t (the pairs so far
over the seed cap) a test has spent alpha(t) of its level, O'Brien-Fleming-like by default
(alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt t), little early, almost all at the end) or Pocock-like
(alpha log(1 + (e - 1) t)). Each look's boundary is a value of the paired t statistic, chosen so that under no
effect the chance of a first crossing at that look is the alpha spent since the previous one. The t statistics of
one comparison at its looks are not independent increments of a known-variance sum, so the boundaries are
calibrated on 200,000 simulated normal sequences with those look sizes (a fixed seed: the same plan always gives
the same boundaries), which makes them exact for normal differences up to simulation error (about 1e-4 in level).

At each look a comparison is
- "superior" / "inferior" when the two-sided difference test crosses its boundary (the arm is better / worse
  than the baseline on the metric, `higher_is_better` saying which way is better);
- "equivalent within +-delta" when both one-sided tests of TOST cross theirs: the difference is within the
  pre-registered margin delta;
- otherwise open: more seeds, or at the cap "inconclusive", with the seeds that would decide it at the observed
  variance.
Each test gets the family's alpha divided by the family's size (Bonferroni), stated in the protocol.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

from analysis.power import seeds_needed

SUPERIOR, INFERIOR, EQUIVALENT, OPEN, INCONCLUSIVE = "superior", "inferior", "equivalent", "open", "inconclusive"
SPENDING = ("obrien_fleming", "pocock")
DRAWS = 200_000  # simulated null sequences that calibrate a plan's boundaries


def spent(t: float, alpha: float, kind: str = "obrien_fleming", sides: int = 2) -> float:
    """Alpha spent by information fraction t in (0, 1] (sides=1: of a one-sided test at level alpha)."""
    t = min(max(t, 1e-12), 1.0)
    if kind == "pocock":
        return alpha * math.log(1 + (math.e - 1) * t)
    z = stats.norm.ppf(1 - alpha / sides)
    return sides * (1 - stats.norm.cdf(z / math.sqrt(t)))


@lru_cache(maxsize=1024)
def t_boundaries(sizes: tuple[int, ...], cap: int, alpha: float, kind: str = "obrien_fleming",
                 sides: int = 2) -> tuple[float, ...]:
    """The paired-t boundary of each look with `sizes` pairs (increasing, at least 2): a look crosses when |t|
    (sides=2) or t (sides=1) reaches it. Under no effect, with normal differences, the chance of a first crossing at
    look k is the alpha spent between the fractions sizes[k-1] / cap and sizes[k] / cap (infinite boundary: none)."""
    rng = np.random.default_rng(20261206)
    x = rng.standard_normal((DRAWS, sizes[-1]))
    total, squares = np.cumsum(x, axis=1), np.cumsum(x * x, axis=1)
    alive, before, out = np.ones(DRAWS, dtype=bool), 0.0, []
    for n in sizes:
        mean = total[:, n - 1] / n
        sd = np.sqrt(np.maximum(squares[:, n - 1] - n * mean * mean, 0.0) / (n - 1))
        t = mean / np.maximum(sd, 1e-300) * math.sqrt(n)
        stat = np.abs(t) if sides == 2 else t
        now = spent(min(1.0, n / cap), alpha, kind, sides)
        crossing = int(round((now - before) * DRAWS))
        candidates = np.sort(stat[alive])[::-1]
        c = float(candidates[crossing - 1]) if 0 < crossing <= len(candidates) else math.inf
        out.append(c)
        alive &= stat < c
        before = now
    return tuple(out)


@dataclass(frozen=True)
class Plan:
    """A pre-registered sequential plan for one comparison: `alpha` is this test's level (the family's divided by
    its size), `margin` the equivalence margin delta, `cap` the most pairs, `spending` the alpha-spending
    function; the target `power` sets the seeds an open comparison is said to need."""

    alpha: float
    margin: float
    cap: int
    spending: str = "obrien_fleming"
    power: float = 0.8


@dataclass(frozen=True)
class Decision:
    """One look's outcome for one comparison: its verdict and the statistics behind it."""

    verdict: str  # superior, inferior, equivalent, open (more seeds), inconclusive (at the cap)
    n: int
    mean: float
    sd: float
    t_difference: float
    difference_bound: float  # the t value the difference test had to reach at this look
    equivalence_interval: tuple[float, float]  # the TOST interval at this look's one-sided level
    seeds_to_decide: int | None  # for an open or inconclusive comparison: pairs to decide it at its variance

    @property
    def decided(self) -> bool:
        return self.verdict in (SUPERIOR, INFERIOR, EQUIVALENT)


def decide(differences: Sequence[float], look_sizes: Sequence[int], plan: Plan, higher_is_better: bool = True,
           seeds_to_decide: bool = True) -> Decision:
    """The decision at the last of `look_sizes` (pairs at each look so far, the last being len(differences)) on the
    paired differences arm minus baseline; `seeds_to_decide` False leaves an open comparison's seeds unestimated
    (simulations)."""
    d = np.asarray(differences, dtype=float)
    n = len(d)
    sizes = tuple(k for k in look_sizes if k >= 2)
    mean = float(d.mean()) if n else float("nan")
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    if n < 2 or not np.isfinite(sd):
        return Decision(OPEN, n, mean, sd, float("nan"), float("nan"), (float("nan"), float("nan")), None)
    se = max(sd, 1e-12) / math.sqrt(n)
    two = t_boundaries(sizes, plan.cap, plan.alpha, plan.spending, 2)[-1]
    one = t_boundaries(sizes, plan.cap, plan.alpha, plan.spending, 1)[-1]
    t = mean / se
    interval = (mean - one * se, mean + one * se)
    verdict = OPEN
    if abs(t) >= two:
        verdict = SUPERIOR if (t > 0) == higher_is_better else INFERIOR
    elif -plan.margin < interval[0] and interval[1] < plan.margin:
        verdict = EQUIVALENT
    elif n >= plan.cap:
        verdict = INCONCLUSIVE
    needed = None
    if verdict in (OPEN, INCONCLUSIVE) and seeds_to_decide:
        options = [seeds_needed(mean, sd, plan.alpha, plan.power),
                   seeds_needed(mean, sd, plan.alpha, plan.power, margin=plan.margin)]
        needed = min((o for o in options if o is not None), default=None)
    return Decision(verdict, n, mean, sd, t, two, interval, needed)
