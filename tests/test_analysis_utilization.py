"""Data utilization: the effective data multiplier recovers a known multiplier, exponent differences, bootstraps
that resample seeds paired across arms, one-sided multipliers, and crossover detection with honest "no crossover"
answers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from analysis import utilization
from analysis.runs import SEED, D
from analysis.utilization import FitSettings

SCALES = np.array([100, 300, 1000, 3000, 10000, 30000], float)
FAST = FitSettings(n_boot=60, boot_starts=4, starts=15)


def _err(d: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return 0.05 + 2.0 * d ** -alpha


def _runs(metric: str, multiplier: float, seeds: int = 5, noise: float = 0.01, seed: int = 0,
          seed_effect: np.ndarray | None = None) -> pl.DataFrame:
    """An arm that behaves like the baseline with `multiplier` times the unique data; `seed_effect` (a change of the
    exponent per training seed, shared by every arm) models what a seed does to all the runs it trains."""
    rng = np.random.default_rng(seed)
    d, s = np.repeat(SCALES, seeds), np.tile(np.arange(1, seeds + 1), len(SCALES))
    shift = np.zeros(seeds) if seed_effect is None else seed_effect
    err = _err(multiplier * d, 0.5 + shift[s - 1]) * np.exp(rng.normal(0, noise, len(d)))
    return pl.DataFrame({D: d.astype(int), SEED: s, metric: 1 - err if "acc" in metric else err})


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["zs_acc", "caption_loss"])
def test_multiplier_recovers_a_known_multiplier(metric: str):
    base = utilization.fit_runs(_runs(metric, 1.0, seed=1), metric, settings=FAST)
    arm = utilization.fit_runs(_runs(metric, 4.0, seed=2), metric, settings=FAST)
    assert base.form == ("bounded" if metric == "zs_acc" else "power")
    for d in (300.0, 3000.0):
        m = utilization.data_multiplier(arm, base, d)
        assert m.point == pytest.approx(4.0, rel=0.15)
        assert m.lo < 4.0 < m.hi and m.lo > 1.0
        assert utilization.multiplier_verdict(m) == "reproduced"
    same = utilization.exponent_difference(arm, base)  # same law shifted in D: equal exponents
    assert same.lo < 0 < same.hi and abs(same.point) < 0.05


@pytest.mark.slow
def test_no_advantage_gives_multiplier_one_and_a_worse_arm_below_one():
    # 10 seeds: a percentile bootstrap of 5 seeds covers well below its nominal 95% (analysis/repetition.py)
    base = utilization.fit_runs(_runs("zs_acc", 1.0, seeds=10, seed=1), "zs_acc", settings=FAST)
    twin = utilization.fit_runs(_runs("zs_acc", 1.0, seeds=10, seed=3), "zs_acc", settings=FAST)
    worse = utilization.fit_runs(_runs("zs_acc", 0.25, seeds=10, seed=4), "zs_acc", settings=FAST)
    m = utilization.data_multiplier(twin, base, 1000.0)
    assert m.lo < 1.0 < m.hi and utilization.multiplier_verdict(m) == "inconclusive at this scale"
    w = utilization.data_multiplier(worse, base, 1000.0)
    assert w.point == pytest.approx(0.25, rel=0.2) and utilization.multiplier_verdict(w) == "not reproduced"


def test_unreachable_score_gives_an_infinite_multiplier():
    base = utilization.fit_runs(_runs("caption_loss", 1.0), "caption_loss", settings=FitSettings(n_boot=0))
    better_floor = pl.DataFrame({D: SCALES.astype(int).repeat(2), SEED: np.tile([1, 2], len(SCALES)),
                                 "caption_loss": (0.01 + 2.0 * SCALES.repeat(2) ** -0.5)})
    arm = utilization.fit_runs(better_floor, "caption_loss", settings=FitSettings(n_boot=0))
    assert utilization.data_multiplier(arm, base, 30000.0).point == np.inf  # baseline's floor E is higher


@pytest.mark.slow
def test_bootstrap_resamples_seeds_paired_across_arms():
    """A seed that changes the exponent of every arm it trains (a shared seed effect) widens each arm's exponent
    interval, but cancels in the paired difference: an unpaired or per-point bootstrap would not see that."""
    shared = np.random.default_rng(7).normal(0, 0.05, 5)
    base = utilization.fit_runs(_runs("caption_loss", 1.0, seed=1, seed_effect=shared), "caption_loss",
                                settings=FAST)
    arm = utilization.fit_runs(_runs("caption_loss", 1.0, seed=2, seed_effect=shared), "caption_loss", settings=FAST)
    a, b = utilization.paired_boot(arm, base)
    assert len(a) == len(b) >= 50
    paired = a[:, 1] - b[:, 1]
    unpaired = a[:, 1] - np.roll(b[:, 1], 1)  # resample i of one arm against resample i-1 of the other
    assert np.std(paired) < 0.7 * np.std(unpaired)
    diff = utilization.exponent_difference(arm, base)
    assert diff.lo < 0 < diff.hi  # the same law: no difference


def test_a_multiplier_that_reaches_the_floor_is_a_one_sided_bound():
    m = utilization.Estimate(2.31, 0.273, float("inf"))
    assert utilization.multiplier_text(m).startswith("> 0.273 (point 2.31")
    assert utilization.multiplier_text(utilization.Estimate(1.5, 1.1, 2.0)) == "1.5 [1.1, 2]"


def test_fits_need_enough_scales_and_an_accuracy_above_chance():
    with pytest.raises(ValueError, match="distinct D"):
        utilization.fit_runs(pl.DataFrame({D: [10, 10, 20, 20], "zs_acc": [0.5] * 4}), "zs_acc")
    flat = pl.DataFrame({D: SCALES.astype(int), SEED: [1] * 6, "zs_acc": [0.21, 0.2, 0.19, 0.2, 0.2, 0.2]})
    with pytest.raises(ValueError, match="not above chance"):
        utilization.fit_runs(flat, "zs_acc", chance=0.2)
    few = utilization.fit_runs(_runs("zs_acc", 1.0, seeds=1), "zs_acc", settings=FAST)  # 6 points: no bootstrap
    assert few.intervals == {} and few.n_points == 6


def test_fit_groups_in_processes_equal_fits_in_this_one():
    groups = {(m, k): (_runs("zs_acc", m, seed=k), "zs_acc", None) for m, k in ((1.0, 1), (3.0, 2))}
    groups["flat"] = (pl.DataFrame({D: [1, 1], SEED: [1, 2], "zs_acc": [0.5, 0.5]}), "zs_acc", None)
    # a grid part way through its first wave: three D values, one run each, as many points as the law's parameters
    groups["early"] = (_runs("zs_acc", 1.0, seeds=1).head(3), "zs_acc", None)
    here, why = utilization.fit_groups(groups, FitSettings(n_boot=10, boot_starts=2, starts=5), workers=1)
    there, _ = utilization.fit_groups(groups, FitSettings(n_boot=10, boot_starts=2, starts=5), workers=2)
    assert set(why) == {"flat", "early"} and set(here) == set(there) == {(1.0, 1), (3.0, 2)}
    assert why["early"] == ("3 run(s) with a finite zs_acc; a fit of 3 parameters needs more points than that "
                            "(add seeds)")
    for key in here:
        assert here[key].params == there[key].params
        np.testing.assert_array_equal(here[key].boot_params, there[key].boot_params)


def _curve(samples: list[int], mean: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"samples_seen": samples, "mean": mean})


def test_crossover_found_by_interpolation():
    s = [0, 100, 200, 300, 400]
    c = utilization.crossover(_curve(s, [0.2, 0.30, 0.40, 0.55, 0.60]), _curve(s, [0.2, 0.35, 0.45, 0.50, 0.52]))
    assert c.kind == "overtakes"
    assert c.samples_seen == pytest.approx(200 + 100 * 0.05 / 0.10)  # the gap goes -0.05 -> +0.05
    # lower is better (a loss): the same shape mirrored
    lossy = utilization.crossover(_curve(s, [3.0, 2.6, 2.3, 1.9, 1.7]), _curve(s, [3.0, 2.5, 2.2, 2.0, 1.9]),
                                  higher_is_better=False)
    assert lossy.kind == "overtakes" and 200 < lossy.samples_seen < 300
    assert c.text == "behind until ~250 samples seen, ahead from then on"
    # ahead at 100, behind at 200, ahead from then on: it overtakes for good, and does not read "behind until"
    wavering = utilization.crossover(_curve(s, [0.2, 0.40, 0.40, 0.55, 0.60]), _curve(s, [0.2, 0.35, 0.45, 0.50, 0.52]))
    assert wavering.kind == "overtakes" and wavering.samples_seen == pytest.approx(250)
    assert wavering.text == "ahead for good from ~250 samples seen (before, ahead at 1 of 2 evaluations, behind at 200)"


def test_no_crossover_cases():
    s = [0, 100, 200]
    ahead = utilization.crossover(_curve(s, [0.2, 0.4, 0.5]), _curve(s, [0.2, 0.3, 0.4]))
    assert ahead.kind == "ahead throughout" and ahead.samples_seen is None
    behind = utilization.crossover(_curve(s, [0.2, 0.5, 0.4]), _curve(s, [0.2, 0.3, 0.45]))
    assert behind.kind == "not ahead at the end" and "no crossover" in behind.text
    short = utilization.crossover(_curve([0, 100], [0.2, 0.5]), _curve([0, 100, 200], [0.2, 0.3, 0.4]))
    assert short.kind == "too few points" and short.samples_seen is None
    # points where only one arm was evaluated do not count
    disjoint = utilization.crossover(_curve([0, 50, 150], [0.2, 0.3, 0.6]), _curve([0, 100, 200], [0.2, 0.3, 0.4]))
    assert disjoint.kind == "too few points"
