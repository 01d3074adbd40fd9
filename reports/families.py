"""Protocol 2's multiplicity rule and lead table (reports/results/cpu-v2/PROTOCOL.md).

Each study of protocol 2 names the family of its claimed comparisons (one per takeaway, across regimes).
Within a family, the two-sided paired t-test p-values are adjusted by Holm's step-down method, padded to
the family's size in the protocol with p = 1 for comparisons not measured yet, so that a partial study is
never judged more leniently than the whole one. The lead table shows every judged comparison of every
family: takeaway x regime, the difference with its interval, n, the adjusted p and the verdict; beside
them, the data-utilization rows of a fitted law (exponent difference, data multiplier), which are judged by
their bootstrap intervals outside Holm's families.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from analysis import stats, utilization
from reports.data_use import EXPONENT, MULTIPLIER, REPETITION
from reports.render import Section, Table, fmt, fmt_ci
from reports.studies import DIFFERENCE, Context, Study, comparison_key, comparisons

NOT_MEASURED = "not yet measured: its grid has no comparison yet"
RULE = (
    "Protocol 2 (the paper's regime): a verdict is decided when the Holm-adjusted two-sided paired t-test "
    "p-value is below 0.05 within its family (one per takeaway, across regimes, padded with p = 1 for "
    "comparisons not yet measured), on the side of the mean difference; with fewer than 3 pairs it is "
    "inconclusive. Intervals are the unadjusted 95% Student-t intervals of the paired difference. Primary "
    "metric: `zs_norm`, the chance-normalised attribute accuracy (0 = chance, 1 = perfect), `zs_acc` beside it. "
    "A verdict that begins with “collapsed (k/n)” is of an arm whose visual input collapsed in k of its n runs. "
    "Takeaway 2's scaling-exponent, data-multiplier and R*_D rows compare fitted laws: their interval is the 95% "
    "bootstrap interval over seeds, paired across the two arms (decided when it excludes no effect: 0 for the "
    "exponent and the log ratio of R*_D, 1 for the multiplier); n counts the arm's fitted (D, seed) points, or "
    "for R*_D the paired resamples, and they are outside Holm's families (p shown as -).")
LEAD_MEASURES = (DIFFERENCE, EXPONENT, MULTIPLIER, REPETITION)


def holm_adjustments(items: list[tuple[Context, Study]], sizes: dict[str, int]) -> dict[str, dict]:
    """Per grid key, the Holm-adjusted p-value of each claimed comparison (`comparison_key`) of the studies
    that name a family; `sizes` gives each family's number of comparisons in the protocol."""
    measured: dict[str, list[tuple[str, tuple, float]]] = {}
    for ctx, study in items:
        if not study.family or ctx.runs.is_empty():
            continue
        comps = comparisons(ctx, study)
        if comps.is_empty():
            continue
        for c in comps.filter(pl.col("direction") != 0).iter_rows(named=True):
            measured.setdefault(study.family, []).append((ctx.grid.key, comparison_key(c), c["t_p_value"]))
    out: dict[str, dict] = {}
    for family, rows in measured.items():
        size = max(sizes.get(family, len(rows)), len(rows))
        p = np.array([r[2] for r in rows] + [1.0] * (size - len(rows)))
        for (grid, key, _), adjusted in zip(rows, stats.holm(p), strict=False):
            out.setdefault(grid, {})[key] = float(adjusted)
    return out


def _shown_estimate(r: dict) -> str:
    """A lead row's estimate and interval; a multiplier's one-sided when its interval reaches infinity."""
    if r["estimate"] is None:
        return "-"
    if r["measure"].startswith(MULTIPLIER):
        return utilization.multiplier_text(utilization.Estimate(r["estimate"], r["lo"], r["hi"]))
    return fmt_ci(r["estimate"], r["lo"], r["hi"], sign=True)


def lead_section(judged: list[tuple[Study, pl.DataFrame]], planned: Sequence[Study] = ()) -> Section | None:
    """The lead table of the studies with a family: one row per Holm-judged comparison, then one row per
    `planned` study with a family and nothing judged yet (None when nothing is judged). The data-utilization
    rows of a fitted law come with the paired differences; their p is not Holm's, so it is left out."""
    rows, measured = [], set()
    for study, verdicts in judged:
        if not study.family:
            continue
        lead = pl.any_horizontal(pl.col("measure").str.starts_with(m) for m in LEAD_MEASURES)
        for v in verdicts.filter(lead).iter_rows(named=True):
            measured.add((study.grid, study.part))
            rows.append({"takeaway": study.claim_id, "regime": study.regime or "-", "comparison": v["comparison"],
                         "measure": v["measure"], "estimate": v["estimate"], "lo": v["lo"], "hi": v["hi"],
                         "n": v["n"], "verdict": v["verdict"],
                         "p_holm": v["p_value"] if v["measure"].startswith(DIFFERENCE) else None})
    if not rows:
        return None
    rows += [{"takeaway": s.claim_id, "regime": s.regime or "-", "comparison": f"grid `{s.grid}`", "measure": "-",
              "estimate": None, "lo": None, "hi": None, "n": 0, "p_holm": None, "verdict": NOT_MEASURED}
             for s in planned if s.family and (s.grid, s.part) not in measured]
    data = pl.DataFrame(rows)
    shown = data.select(
        "takeaway", "regime", "comparison", "measure",
        pl.struct("estimate", "lo", "hi", "measure").map_elements(_shown_estimate, return_dtype=pl.String)
        .alias("difference [95% CI]"),
        "n", pl.col("p_holm").map_elements(lambda p: fmt(p, 2), return_dtype=pl.String).fill_null("-")
        .alias("p (Holm)"), "verdict")
    section = Section("lead", "Lead table: each takeaway in each regime", text=[RULE])
    section.tables.append(Table("lead", "Takeaway x regime: measured difference, interval, n, verdict", data, shown))
    return section
