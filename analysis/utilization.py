"""Data utilization of an arm against the understanding-only baseline (PAPER.md, takeaway 2):

- scaling exponents: the metric vs unique data D fitted per arm (`power` for losses, `bounded` for
  accuracies: the error rate 1 - acc follows E + A / D^alpha), with bootstrap intervals that resample seeds
  (a seed's points at every D move together), paired across the two arms compared (resample i of each draws the
  same seeds);
- the effective data multiplier at D: how many times more unique data the baseline needs to reach the
  arm's fitted score at D, from inverting the baseline's fitted curve, with an interval from the two
  fits' paired bootstrap parameter sets; where a resample's baseline never gets there (the arm's value lies
  below the baseline's fitted floor) the multiplier is unbounded and the interval one-sided;
- the crossover of learning curves (metric vs samples seen, paper Figure 4): where the arm, behind
  at first, overtakes the baseline for good, or why there is none.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import polars as pl

from analysis import scaling, stats
from analysis.aggregate import finite
from analysis.runs import NORMALISED, SEED, D

MIN_SCALES = 3  # distinct D values a scaling fit needs
MIN_BOOT_POINTS = 8  # with fewer points a case bootstrap of a 3-parameter law is degenerate: no intervals
ACC_CEILING = 1 - 1e-3  # a perfect score is clipped here: the error rate's log must stay finite
K = TypeVar("K")


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval."""

    point: float
    lo: float
    hi: float


@dataclass(frozen=True)
class Crossover:
    """Where (or whether) an arm's learning curve overtakes the baseline's."""

    kind: str  # overtakes | ahead throughout | not ahead at the end | too few points
    samples_seen: float | None  # where the arm overtakes, for kind "overtakes"
    text: str


def form_for(metric: str) -> str:
    """The scaling form for a metric: `bounded` for accuracies, `power` for losses and errors."""
    return "bounded" if "acc" in metric or metric == NORMALISED else "power"


@dataclass(frozen=True)
class FitSettings:
    """Bootstrap and multi-start settings of the data-utilization fits."""

    n_boot: int = 100  # bootstrap resamples (0: no intervals)
    boot_starts: int = 8  # random grid starts per resample
    starts: int | None = 30  # random grid starts of the full-data fit (None: the whole grid)
    seed: int = 0


def scaling_points(runs: pl.DataFrame, metric: str,
                   chance: float | None = None) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(form, D, y, seed) to fit `metric` vs D over the runs (every seed a point). An accuracy is fitted only when
    its mean at the largest D is above `chance` (at chance it is flat in D, and no power law describes it).
    Raises ValueError naming what is missing."""
    df = finite(runs, metric)
    if df.is_empty() or df[D].n_unique() < MIN_SCALES:
        scales = 0 if df.is_empty() else df[D].n_unique()
        raise ValueError(f"{scales} distinct D value(s) with a finite {metric}; a fit needs {MIN_SCALES}")
    form = form_for(metric)
    parameters = len(scaling.FORMS[form].names)
    if len(df) <= parameters:
        raise ValueError(f"{len(df)} run(s) with a finite {metric}; a fit of {parameters} parameters needs more "
                         "points than that (add seeds)")
    top = df.filter(pl.col(D) == df[D].max())[metric].mean()
    if form == "bounded" and chance is not None and not top > chance:
        raise ValueError(f"mean {metric} at the largest D ({top:.3f}) is not above chance ({chance:.3f})")
    y = df[metric].cast(pl.Float64).to_numpy()
    if form == "bounded":
        y = np.clip(y, 0.0, ACC_CEILING)
    return form, df[D].cast(pl.Float64).to_numpy(), y, df[SEED].to_numpy()


def _fit(form: str, x: np.ndarray, y: np.ndarray, seeds: np.ndarray, settings: FitSettings) -> scaling.ScalingFit:
    """The fit, with bootstrap intervals (over seeds) only from MIN_BOOT_POINTS points on."""
    n_boot = settings.n_boot if len(y) >= MIN_BOOT_POINTS else 0
    return scaling.fit(form, x, y, starts=settings.starts, n_boot=n_boot, boot_starts=settings.boot_starts,
                       seed=settings.seed, clusters=seeds)


def fit_runs(runs: pl.DataFrame, metric: str, chance: float | None = None,
             settings: FitSettings = FitSettings()) -> scaling.ScalingFit:
    """Fit `metric` vs D over the runs (see `scaling_points`)."""
    return _fit(*scaling_points(runs, metric, chance), settings)


def fit_groups(groups: Mapping[K, tuple[pl.DataFrame, str, float | None]], settings: FitSettings = FitSettings(),
               workers: int = 1) -> tuple[dict[K, scaling.ScalingFit], dict[K, str]]:
    """Fit many (runs, metric, chance) groups, over `workers` spawned processes when > 1 (the results do not
    depend on it). Returns the fits and, for groups that cannot be fitted, the reason."""
    jobs, reasons = {}, {}
    for key, (runs, metric, chance) in groups.items():
        try:
            jobs[key] = scaling_points(runs, metric, chance)
        except ValueError as e:
            reasons[key] = str(e)
    args = [(*job, settings) for job in jobs.values()]
    bootstrapped = sum(settings.n_boot > 0 and len(y) >= MIN_BOOT_POINTS for _, _, y, _ in jobs.values())
    if workers > 1 and bootstrapped > 1:  # point fits alone are quicker than starting processes
        # spawn, not fork: the parent holds polars' and torch's threads, which a forked child would inherit locked
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(args)), mp_context=ctx) as pool:
            fits = list(pool.map(_fit, *zip(*args, strict=True)))
    else:
        fits = [_fit(*a) for a in args]
    return dict(zip(jobs, fits, strict=True)), reasons


def _params(fit: scaling.ScalingFit) -> np.ndarray:
    """The point parameter set (1, 3) in (A, alpha, E) order of the error/loss law."""
    return np.array([[fit.params["A"], fit.params["alpha"], fit.params["E"]]])


def paired_boot(arm: scaling.ScalingFit, base: scaling.ScalingFit) -> tuple[np.ndarray, np.ndarray]:
    """The two fits' bootstrap parameter sets (B, 3) of the resamples both kept, row i of each from the same draw
    of seeds."""
    ids_a = arm.boot_ids if arm.boot_ids is not None else np.arange(len(arm.boot_params))
    ids_b = base.boot_ids if base.boot_ids is not None else np.arange(len(base.boot_params))
    common = np.intersect1d(ids_a, ids_b)
    return (arm.boot_params[np.searchsorted(ids_a, common)].reshape(-1, 3),
            base.boot_params[np.searchsorted(ids_b, common)].reshape(-1, 3))


def _interval(samples: np.ndarray) -> tuple[float, float]:
    """95% percentile interval without interpolation, so infinite samples stay well defined."""
    samples = samples[~np.isnan(samples)]
    if len(samples) == 0:
        return float("nan"), float("nan")
    q = 50 * (1 - stats.LEVEL), 50 * (1 + stats.LEVEL)
    lo, hi = np.percentile(samples, q, method="inverted_cdf")
    return float(lo), float(hi)


def exponent_difference(arm: scaling.ScalingFit, base: scaling.ScalingFit) -> Estimate:
    """alpha(arm) - alpha(baseline): positive when the arm improves faster with data. The interval from the two
    fits' paired resamples (the same seeds drawn)."""
    point = arm.params["alpha"] - base.params["alpha"]
    a, b = paired_boot(arm, base)
    lo, hi = _interval(a[:, 1] - b[:, 1])
    return Estimate(point, lo, hi)


def _multipliers(arm: np.ndarray, base: np.ndarray, d: float) -> np.ndarray:
    """Multiplier at D=d per parameter set (rows of arm and base paired): D_base / d where the baseline's
    law reaches the arm's value at d; inf where the baseline never gets that low."""
    a_a, alpha_a, e_a = arm.T
    a_b, alpha_b, e_b = base.T
    target = e_a + a_a * d ** -alpha_a  # the arm's loss / error rate at d
    gap = target - e_b
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        d_base = np.where(gap > 0, (a_b / gap) ** (1.0 / alpha_b), np.inf)
    return d_base / d


def data_multiplier(arm: scaling.ScalingFit, base: scaling.ScalingFit, d: float) -> Estimate:
    """Effective data multiplier of `arm` over `base` at unique data `d` (both fits of the same form)."""
    if arm.form != base.form:
        raise ValueError(f"fits of different forms: {arm.form} and {base.form}")
    point = float(_multipliers(_params(arm), _params(base), d)[0])
    lo, hi = _interval(_multipliers(*paired_boot(arm, base), d))
    return Estimate(point, lo, hi)


def multiplier_text(m: Estimate) -> str:
    """The multiplier with its interval, or a one-sided bound ('> 0.27') when the interval reaches infinity: some
    resamples put the arm's value below the baseline's fitted floor, where no amount of data gets the baseline."""
    if np.isinf(m.hi) and np.isfinite(m.lo):
        return f"> {m.lo:.3g} (point {m.point:.3g}; unbounded above: the baseline's fitted floor)"
    return f"{m.point:.3g} [{m.lo:.3g}, {m.hi:.3g}]"


def multiplier_verdict(m: Estimate) -> str:
    """Claim: the arm uses data better (multiplier > 1), judged by the interval."""
    if np.isnan(m.lo) or np.isnan(m.hi):
        return "inconclusive at this scale"
    return stats.verdict((m.lo - 1.0, m.hi - 1.0), +1)


def crossover(arm: pl.DataFrame, base: pl.DataFrame, higher_is_better: bool = True,
              min_points: int = 2) -> Crossover:
    """Where the arm's learning curve overtakes the baseline's for good. `arm` and `base` have columns
    samples_seen and mean (e.g. from aggregate.curve_stats); the initialisation (samples_seen 0) and
    points where only one curve was evaluated are left out. The crossing is interpolated linearly between
    the last evaluation behind and the first one ahead."""
    both = (arm.select("samples_seen", pl.col("mean").alias("a"))
            .join(base.select("samples_seen", pl.col("mean").alias("b")), on="samples_seen")
            .filter(pl.col("samples_seen") > 0).sort("samples_seen"))
    if len(both) < min_points:
        return Crossover("too few points", None, f"no crossover measurable: {len(both)} common evaluation(s) "
                         f"after initialisation (need {min_points}; set eval.every)")
    s = both["samples_seen"].cast(pl.Float64).to_numpy()
    d = (both["a"] - both["b"]).to_numpy() * (1 if higher_is_better else -1)
    if d[-1] <= 0:
        return Crossover("not ahead at the end", None,
                         f"no crossover: not ahead at the last evaluation ({s[-1]:,.0f} samples seen)")
    behind = np.flatnonzero(d <= 0)
    if len(behind) == 0:
        return Crossover("ahead throughout", None,
                         f"no crossover: ahead from the first evaluation ({s[0]:,.0f} samples seen) on")
    j = behind[-1]
    at = s[j] + (s[j + 1] - s[j]) * (-d[j]) / (d[j + 1] - d[j])
    earlier = int(np.sum(d[:j] > 0))  # evaluations ahead before the last one behind: the lead came and went
    if earlier == 0:
        return Crossover("overtakes", float(at), f"behind until ~{at:,.0f} samples seen, ahead from then on")
    return Crossover("overtakes", float(at), f"ahead for good from ~{at:,.0f} samples seen (before, ahead at "
                                             f"{earlier} of {j + 1} evaluations, behind at {s[j]:,.0f})")
