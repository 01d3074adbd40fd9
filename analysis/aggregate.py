"""Seed statistics per arm and data scale, and paired comparisons between arms over matching runs.

Two runs *pair* when their configs differ only in the treatment keys of a comparison (e.g. `objective.*`
for generation targets): same seed, same data scale, same everything else. Every comparison is over such
pairs, so seed-to-seed variation common to both arms cancels.

The verdict on a claimed direction comes from the 95% interval of the mean paired difference
(`analysis.stats.verdict`), and needs at least MIN_PAIRS pairs: with fewer, an interval is
degenerate and the verdict says so (`too_few_pairs`), apart from an inconclusive interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from analysis import stats
from analysis.runs import SEED, D, identity_columns

MIN_PAIRS = 3
NO_CLAIM = "no claim"
SAME_RUNS = "the same runs as its baseline: the two trials train alike (sweep plan lists them)"
COMPARISON_SCHEMA = {"arm": pl.String, "baseline": pl.String, "metric": pl.String, "n": pl.Int64,
                     "diff": pl.Float64, "lo": pl.Float64, "hi": pl.Float64, "p_value": pl.Float64,
                     "t_p_value": pl.Float64, "direction": pl.Int64, "verdict": pl.String}


def finite(df: pl.DataFrame, metric: str) -> pl.DataFrame:
    """Rows whose `metric` is present and finite (none when the column is absent)."""
    if metric not in df.columns:
        return df.clear()
    return df.filter(pl.col(metric).is_not_null() & pl.col(metric).cast(pl.Float64).is_finite())


def mean_intervals(df: pl.DataFrame, value: str, by: Sequence[str], extra: Sequence[pl.Expr] = ()) -> pl.DataFrame:
    """One row per group of `by` (first-seen order): n, mean, std and the 95% Student-t interval of the mean
    of `value` (null from a single value). With 3-5 seeds a percentile bootstrap is far too narrow."""
    v = pl.col(value).cast(pl.Float64)
    groups = df.group_by(by, maintain_order=True).agg(pl.len().alias("n"), v.mean().alias("mean"),
                                                      v.std().fill_null(0.0).alias("std"), *extra)
    n = groups["n"].to_numpy()
    quantile = np.where(n > 1, stats.t_quantile(np.maximum(n - 1, 1)), np.nan)
    half = pl.Series(quantile * groups["std"].to_numpy() / np.sqrt(n)).fill_nan(None)
    return groups.with_columns((pl.col("mean") - half).alias("lo"), (pl.col("mean") + half).alias("hi"))


def seed_stats(runs: pl.DataFrame, metric: str, by: Sequence[str] = ("arm", D)) -> pl.DataFrame:
    """One row per group of `by`: n, mean, std and the 95% Student-t interval of the mean of `metric` over
    the group's runs (its seeds), plus the seeds used."""
    by = [c for c in by if c in runs.columns]
    seeds = (pl.col(SEED).sort().cast(pl.String).str.join(" ") if SEED in runs.columns
             else pl.lit("")).alias("seeds")
    if metric not in runs.columns:
        runs = runs.with_columns(pl.lit(None, dtype=pl.Float64).alias(metric))
    table = mean_intervals(finite(runs, metric), metric, by, [seeds])
    return table.select(*by, pl.lit(metric).alias("metric"), "n", "mean", "std", "lo", "hi", "seeds").sort(by)


def _is_treatment(key: str, treatment: Sequence[str]) -> bool:
    return any(key == t or (t.endswith(".") and key.startswith(t)) for t in treatment)


def with_pair_key(runs: pl.DataFrame, treatment: Sequence[str]) -> pl.DataFrame:
    """`runs` with a `pair` column: the config's identity keys minus the treatment keys (exact keys, or
    prefixes ending in '.'). Runs with equal `pair` differ only in the treatment."""
    keys = [c for c in identity_columns(runs) if not _is_treatment(c, treatment)]
    if not keys:
        return runs.with_columns(pl.lit("").alias("pair"))
    return runs.with_columns(
        pl.concat_str([pl.col(c).cast(pl.String).fill_null("-") for c in keys], separator="|").alias("pair"))


def paired_values(runs: pl.DataFrame, metric: str, arm: str, baseline: str,
                  treatment: Sequence[str]) -> pl.DataFrame:
    """pair, a (arm), b (baseline), and D and seed of each pair; repeated runs of one cell are averaged."""
    df = with_pair_key(finite(runs, metric), treatment)
    extra = [pl.col(c).first() for c in (D, SEED) if c in df.columns]

    def side(label: str, name: str, keep: bool) -> pl.DataFrame:
        return (df.filter(pl.col("arm") == label).group_by("pair", maintain_order=True)
                .agg(pl.col(metric).cast(pl.Float64).mean().alias(name), *(extra if keep else [])))

    return side(arm, "a", True).join(side(baseline, "b", False), on="pair", how="inner")


def too_few_pairs(n: int) -> str:
    """The verdict of a claimed comparison that rests on fewer than MIN_PAIRS pairs: undecided, and why."""
    return f"inconclusive: too few pairs ({n} of {MIN_PAIRS} needed)"


def judge(lo: float, hi: float, n: int, direction: int) -> str:
    """Verdict on a claimed sign of a difference (+1 / -1; 0 means no claim) from its interval."""
    if direction == 0:
        return NO_CLAIM
    if n < MIN_PAIRS:
        return too_few_pairs(n)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive at this scale"
    return stats.verdict((lo, hi), direction)


def compare(runs: pl.DataFrame, metric: str, arm: str, baseline: str, treatment: Sequence[str],
            direction: int = 0) -> dict[str, Any] | None:
    """Paired comparison of `arm` minus `baseline` on `metric` (None when no run pairs): a row of
    COMPARISON_SCHEMA, with the paired sign-flip and t-test p-values and the verdict on `direction`."""
    pairs = paired_values(runs, metric, arm, baseline, treatment)
    if pairs.is_empty():
        return None
    a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    c = stats.paired(a, b)
    same = _run_ids(runs, arm) == _run_ids(runs, baseline)  # a difference of 0 by construction, not a measurement
    return {"arm": arm, "baseline": baseline, "metric": metric, "n": c.n, "diff": c.mean_diff, "lo": c.lo,
            "hi": c.hi, "p_value": c.p_value, "t_p_value": stats.t_test_p_value(a - b),
            "direction": 0 if same else direction, "verdict": SAME_RUNS if same else judge(c.lo, c.hi, c.n, direction)}


def _run_ids(runs: pl.DataFrame, arm: str) -> set[str]:
    """The runs whose training the arm's rows are (a copy of a run that trains alike counts as that run)."""
    column = "trained_as" if "trained_as" in runs.columns else "run_id"
    return set(runs.filter(pl.col("arm") == arm)[column].to_list())


def judge_adjusted(diff: float, p_adjusted: float, n: int, direction: int, alpha: float = 0.05) -> str:
    """Verdict on a claimed sign from a multiplicity-adjusted p-value (protocol 2): decided when p_adjusted <
    alpha, on the side of the mean difference; inconclusive otherwise or with fewer than MIN_PAIRS pairs."""
    if direction == 0:
        return NO_CLAIM
    if n < MIN_PAIRS:
        return too_few_pairs(n)
    if not np.isfinite(p_adjusted) or p_adjusted >= alpha or diff == 0:
        return "inconclusive at this scale"
    return "reproduced" if diff * direction > 0 else "not reproduced"


def matched_baseline(runs: pl.DataFrame, arm: str, baselines: Sequence[str], treatment: Sequence[str]) -> str | None:
    """The baseline arm sharing the most run pairs with `arm` (None when none shares any)."""
    df = with_pair_key(runs, treatment)
    pairs = set(df.filter(pl.col("arm") == arm)["pair"].to_list())
    counts = {b: len(pairs & set(df.filter(pl.col("arm") == b)["pair"].to_list())) for b in baselines}
    best = max(counts, key=counts.get, default=None)
    return best if best is not None and counts[best] > 0 else None


def compare_to_baselines(runs: pl.DataFrame, metric: str, is_baseline: pl.Expr, treatment: Sequence[str],
                         direction: Callable[[pl.DataFrame], int] | None = None) -> pl.DataFrame:
    """Each arm that is not a baseline against its matched baseline arm (rows of COMPARISON_SCHEMA);
    `direction(arm_runs)` gives the claimed sign of arm minus baseline (None: no claims)."""
    baselines = runs.filter(is_baseline)["arm"].unique(maintain_order=True).to_list()
    arms = runs.filter(~is_baseline)["arm"].unique(maintain_order=True).to_list()
    rows = []
    for arm in arms:
        base = matched_baseline(runs, arm, baselines, treatment)
        sign = direction(runs.filter(pl.col("arm") == arm)) if direction else 0
        row = compare(runs, metric, arm, base, treatment, sign) if base else None
        if row is not None:
            rows.append(row)
    return pl.DataFrame(rows, schema=COMPARISON_SCHEMA)


def curve_stats(curves: pl.LazyFrame, runs: pl.DataFrame, metric: str, source: str = "eval") -> pl.DataFrame:
    """Mean learning curve of `metric` per arm of `runs` (columns run_id, arm): at each samples_seen, the
    mean over the arm's runs and its 95% Student-t interval (columns arm, samples_seen, n, mean, lo, hi)."""
    points = (curves.filter((pl.col("metric") == metric) & (pl.col("source") == source)
                            & pl.col("samples_seen").is_not_null() & pl.col("value").is_finite())
              .join(runs.lazy().select("run_id", "arm"), on="run_id").collect())
    table = mean_intervals(points, "value", ["arm", "samples_seen"])
    return table.select("arm", "samples_seen", "n", "mean", "lo", "hi").sort("arm", "samples_seen")


def values_at(curves: pl.LazyFrame, runs: pl.DataFrame, metric: str, samples_seen: int,
              source: str = "eval") -> pl.DataFrame:
    """`runs` with `metric` replaced by each run's curve value at `samples_seen` (runs without one dropped),
    so that `compare` can pair arms at any point of training."""
    at = (curves.filter((pl.col("metric") == metric) & (pl.col("source") == source)
                        & (pl.col("samples_seen") == samples_seen))
          .select("run_id", pl.col("value").alias(metric)).collect())
    return runs.drop(metric, strict=False).join(at, on="run_id", how="inner")
