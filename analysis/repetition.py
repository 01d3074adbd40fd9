"""Repetition utilization of an arm: R*_D of the data-constrained law (Muennighoff et al. 2023), the number of
repetitions after which repeated data is worth 1/e of fresh data, from a data-scaling grid's own runs.

Along runs at one number of samples seen S alone, E, B, beta and R*_D trade off; so each arm is fitted in two
stages, as the paper fits its law: (1) its base law from the grid's one-epoch runs (each of D unique samples seen
once, S = D): err(D) = E + B / D^beta; (2) that law frozen, R*_D from the runs at fixed S (D unique samples seen
S / D times): err = E + B / D'^beta with D' = D + D R*_D (1 - exp(-(S/D - 1) / R*_D)). `err` is the loss, or one
minus an accuracy. One model size: the law's model term is a constant, folded into E.

Intervals come from a bootstrap over seeds (all of a seed's runs move together), paired across the two arms
compared (resample i of each draws the same seeds): with n seeds there are C(2n - 1, n) distinct resamples (126
for 5), so the percentile interval is coarse, and a bootstrap of so few seeds covers less than its nominal 95%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from analysis import laws, scaling
from analysis.runs import SAMPLES, SEED, D
from analysis.utilization import ACC_CEILING, form_for

R_STARTS = {"R_D": (0.5, 2.0, 8.0, 32.0, 128.0)}


@dataclass(frozen=True)
class Repetition:
    """An arm's R*_D (repetitions after which repeated data is worth 1/e of fresh) with its interval and base law."""

    r_star: float
    lo: float
    hi: float
    base: dict[str, float]  # the stage-1 law: B, beta, E
    epoch_points: int
    fixed_points: int


def error(runs: pl.DataFrame, metric: str) -> np.ndarray:
    """The loss, or one minus an accuracy (clipped below perfect, so its log is finite)."""
    y = runs[metric].cast(pl.Float64).to_numpy()
    return 1.0 - np.clip(y, None, ACC_CEILING) if form_for(metric) == "bounded" else y


def split(runs: pl.DataFrame, metric: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(one-epoch runs, runs that repeat their data) with a finite metric."""
    usable = runs.filter(pl.col(metric).is_finite())
    return usable.filter(pl.col(SAMPLES) == pl.col(D)), usable.filter(pl.col(SAMPLES) > pl.col(D))


def two_stage(epoch: pl.DataFrame, fixed: pl.DataFrame, metric: str, starts: int = 30,
              seed: int = 0) -> tuple[float, dict[str, float]]:
    """(R*_D, the base law) of one arm's one-epoch and fixed-S runs."""
    base = scaling.fit("power", epoch[D].cast(pl.Float64).to_numpy(), error(epoch, metric), starts=starts, seed=seed)
    law = {"B": base.params["A"], "beta": base.params["alpha"], "E": base.params["E"]}
    x = fixed.select(pl.col(SAMPLES).cast(pl.Float64), pl.col(D).cast(pl.Float64)).to_numpy()
    second = laws.fit_law("repetition", x, error(fixed, metric), fixed=law, start_grid=R_STARTS)
    return second.params["R_D"], law


def _resampled(runs: pl.DataFrame, drawn: np.ndarray) -> pl.DataFrame:
    return pl.concat([runs.filter(pl.col(SEED) == s) for s in drawn]) if len(drawn) else runs.clear()


def repetition(arms: dict[str, pl.DataFrame], metric: str, n_boot: int = 100,
               seed: int = 0) -> tuple[dict[str, Repetition], dict[str, np.ndarray]]:
    """Each arm's R*_D with its seed-bootstrap interval, and each arm's resampled R*_D (NaN where a resample left
    too few points), row i of every arm from the same draw of seeds. A multiset of seeds drawn twice is fitted
    once (with 5 seeds most of 100 draws repeat one of the 126 multisets)."""
    seeds = np.unique(np.concatenate([r[SEED].to_numpy() for r in arms.values()]))
    draws = [np.sort(np.random.default_rng(child).choice(seeds, len(seeds)))
             for child in np.random.SeedSequence([seed, 3]).spawn(n_boot)]
    out, boot = {}, {}
    for name, runs in arms.items():
        epoch, fixed = split(runs, metric)
        point, law = two_stage(epoch, fixed, metric, seed=seed)
        fitted: dict[tuple, float] = {}
        for drawn in draws:
            if tuple(drawn) not in fitted:
                fitted[tuple(drawn)] = _resampled_r_star(epoch, fixed, drawn, metric, seed)
        boot[name] = np.array([fitted[tuple(drawn)] for drawn in draws])
        finite = boot[name][np.isfinite(boot[name])]
        lo, hi = np.percentile(finite, [2.5, 97.5]) if len(finite) else (np.nan, np.nan)
        out[name] = Repetition(point, float(lo), float(hi), law, len(epoch), len(fixed))
    return out, boot


def _resampled_r_star(epoch: pl.DataFrame, fixed: pl.DataFrame, drawn: np.ndarray, metric: str, seed: int) -> float:
    e, f = _resampled(epoch, drawn), _resampled(fixed, drawn)
    if e[D].n_unique() < 3 or f.is_empty():
        return np.nan
    try:
        return two_stage(e, f, metric, seed=seed)[0]
    except ValueError:  # too few points in this resample for the law's parameters
        return np.nan


def log_ratio(boot: dict[str, np.ndarray], points: dict[str, Repetition], arm: str,
              base: str) -> tuple[float, float, float, int]:
    """log10(R*_D arm / R*_D baseline): point, 95% interval of the paired resamples, and how many resamples
    both arms fitted."""
    ratio = np.log10(boot[arm]) - np.log10(boot[base])
    ratio = ratio[np.isfinite(ratio)]
    lo, hi = np.percentile(ratio, [2.5, 97.5]) if len(ratio) else (np.nan, np.nan)
    return float(np.log10(points[arm].r_star / points[base].r_star)), float(lo), float(hi), len(ratio)


def has_repetition_design(runs: pl.DataFrame) -> bool:
    """Whether the runs hold both one-epoch runs at 3+ data scales and runs that repeat their data."""
    if SAMPLES not in runs.columns or D not in runs.columns:
        return False
    epoch = runs.filter(pl.col(SAMPLES) == pl.col(D))
    return epoch[D].n_unique() >= 3 and not runs.filter(pl.col(SAMPLES) > pl.col(D)).is_empty()


def distinct_resamples(n: int) -> int:
    """How many different multisets a bootstrap of n seeds can draw."""
    return math.comb(2 * n - 1, n)
