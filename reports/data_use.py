"""The data-utilization part of a report: scaling laws of each arm against unique data D with their bootstrap
intervals, exponent differences and effective data multipliers against the matched baseline, the repetition
utilization R*_D of a data-constrained design, the laws read at the paper's scale, and the crossover of learning
curves at the largest D. It adds tables and figures to a section and returns its verdict rows."""

from __future__ import annotations

import numpy as np
import polars as pl

from analysis import repetition, scaling, stats, utilization
from analysis.aggregate import compare, judge, seed_stats
from analysis.grids import ARM_SEPARATOR
from analysis.runs import SAMPLES, SEED, D, describe_arms
from reports import figures
from reports.extras import INCONCLUSIVE, claimed_arms, crossover_row
from reports.render import Section, Table, fmt, fmt_ci
from reports.studies import Context, Study, comparison_result, verdict_row

EXPONENT = "scaling exponent"  # how the data-utilization verdict rows of a fitted law begin
MULTIPLIER = "effective data multiplier"
REPETITION = "repetition utilization R*_D"
UTILIZATION_METRICS = ("caption_loss",)  # fitted beside each study's primary metric
PAPER_SCALE = 2e8  # the paper's training samples (PAPER.md)


def _fit_rows(fits: dict, metric: str) -> list[dict]:
    rows = []
    for arm, f in fits.items():
        row = {"arm": arm, "metric": metric, "form": f.form, "n_points": f.n_points}
        for name, value in f.params.items():
            lo, hi = f.intervals.get(name, (float("nan"), float("nan")))
            row |= {name: value, f"{name}_lo": lo, f"{name}_hi": hi}
        rows.append(row)
    return rows


def data_utilization(ctx: Context, study: Study, section: Section) -> list[dict]:
    """Scaling fits per arm vs D, exponent differences and effective data multipliers against the matched
    baseline, and the crossover of learning curves at the largest D."""
    verdicts, util, mult, fit_rows = [], [], [], []
    metrics = [m for m in (study.primary, *UTILIZATION_METRICS) if m in ctx.runs.columns]
    groups = {(arm[0], m): (g, m, ctx.chance(m)) for arm, g in ctx.runs.group_by("arm", maintain_order=True)
              for m in metrics}
    all_fits, reasons = utilization.fit_groups(groups, ctx.fit, ctx.workers)
    section.text += [f"{arm}, {metric}: no scaling fit ({why})." for (arm, metric), why in reasons.items()]
    if ctx.fit.n_boot == 0:
        section.text.append("Fits without intervals: this report was built with --bootstrap 0.")
    else:
        section.text += [f"{arm}, {metric}: {f.n_points} points, fitted without intervals (a bootstrap needs "
                         f"{utilization.MIN_BOOT_POINTS}: add seeds)." for (arm, metric), f in all_fits.items()
                         if not f.intervals]
    for metric in metrics:
        fits = {arm: f for (arm, m), f in all_fits.items() if m == metric}
        fit_rows += _fit_rows(fits, metric)
        points = ctx.in_arm_order(seed_stats(ctx.runs, metric, ["arm", D]))
        band = " with bootstrap band" if any(f.intervals for f in fits.values()) else ""
        law = (f", fitted law ({utilization.form_for(metric)}) of {len(fits)} arm(s){band}" if fits
               else ", no arm fitted yet")
        ctx.figure(section, f"scaling_{metric}", f"{metric} vs unique samples D: seed means (95% CI){law}",
                   lambda stem, points=points, fits=fits, metric=metric: figures.scaling_curves(
                       points, fits, ctx.colours, metric, stem, f"{study.title}: {metric} vs unique data",
                       ctx.chance(metric)))
        for arm, base in claimed_arms(ctx, study):
            if arm not in fits or base not in fits:
                continue
            fa, fb = fits[arm], fits[base]
            da = utilization.exponent_difference(fa, fb)
            scales = sorted(ctx.runs.filter(pl.col("arm") == arm)[D].unique().to_list())
            for d in scales:
                m = utilization.data_multiplier(fa, fb, d)
                mult.append({"arm": arm, "baseline": base, "metric": metric, "D": d, "multiplier": m.point,
                             "lo": m.lo, "hi": m.hi})
            m = utilization.data_multiplier(fa, fb, scales[-1])
            direct = _direct_difference(ctx, study, metric, arm, base, scales[-1])
            util.append({"arm": arm, "baseline": base, "metric": metric,
                         "alpha (arm)": fmt_ci(fa.params["alpha"], *fa.intervals.get("alpha", (None, None))),
                         "alpha (baseline)": fmt_ci(fb.params["alpha"], *fb.intervals.get("alpha", (None, None))),
                         "difference": fmt_ci(da.point, da.lo, da.hi, sign=True),
                         f"data multiplier at D={scales[-1]:,}": utilization.multiplier_text(m),
                         f"direct paired difference at D={scales[-1]:,}": direct})
            if metric != study.primary:
                continue
            no_interval = "" if fa.intervals and fb.intervals else " (no interval: a fit without bootstrap)"
            verdicts.append(verdict_row(
                study, f"{arm} vs {base}", f"{EXPONENT} of 1-{metric} vs D, arm minus baseline",
                fa.n_points, da.point, da.lo, da.hi, float("nan"),
                fmt_ci(da.point, da.lo, da.hi, sign=True) + no_interval,
                judge(da.lo, da.hi, min(fa.n_points, fb.n_points), +1)))
            verdicts.append(verdict_row(
                study, f"{arm} vs {base}", f"{MULTIPLIER} at D={scales[-1]:,} (> 1: better use of data)",
                fa.n_points, m.point, m.lo, m.hi, float("nan"),
                f"{utilization.multiplier_text(m)}{no_interval}; measured directly: {direct}",
                utilization.multiplier_verdict(m)))
    if any(np.isinf(r["hi"]) for r in mult):
        section.text.append(UNBOUNDED_NOTE)
    if repetition.has_repetition_design(ctx.runs):
        verdicts += _repetition(ctx, study, section)
    if util:
        section.tables.append(Table(f"{ctx.grid.key}_utilization",
                                    "Data utilization: fitted exponents (95% bootstrap CI) and data multiplier",
                                    pl.DataFrame(mult), pl.DataFrame(util)))
    if fit_rows:
        section.tables.append(Table(f"{ctx.grid.key}_fits", "Scaling-law fits per arm (95% bootstrap CI)",
                                    pl.DataFrame(fit_rows)))
    primary_fits = {arm: f for (arm, m), f in all_fits.items() if m == study.primary}
    if primary_fits:
        _extrapolation(ctx, study, section, primary_fits)
    d_max = ctx.runs[D].max()
    at_max = ctx.runs.filter(pl.col(D) == d_max)
    verdicts += [crossover_row(ctx, study, at_max, arm, base, f" at D={d_max:,}")
                 for arm, base in claimed_arms(ctx, study) if {arm, base} <= set(at_max["arm"].to_list())]
    return verdicts


UNBOUNDED_NOTE = ("A multiplier shown as '> x' is a one-sided bound: in some bootstrap resamples the arm's fitted "
                  "value at D lies below the baseline's fitted floor E, which no amount of baseline data reaches, so "
                  "the upper end of its interval is infinite. Read its point estimate beside the direct paired "
                  "difference of the measured runs at the same D: the point comes from two fitted curves, the "
                  "difference from the runs themselves.")


def _direct_difference(ctx: Context, study: Study, metric: str, arm: str, base: str, d: int) -> str:
    """The measured arm-minus-baseline difference of `metric` at unique data `d`, paired by seed."""
    row = compare(ctx.runs.filter(pl.col(D) == d), metric, arm, base, study.treatment)
    return "no paired runs" if row is None else comparison_result(row["diff"], row["lo"], row["hi"],
                                                                   row["p_value"], row["n"])


def pooled_name(arms: list[str]) -> str:
    """One name for grid arms that differ only in their data regime ("text_only · fixed", "text_only · epoch"); all
    their names where one carries a mark (such as "[collapsed 3/5]"), which belongs to its regime."""
    heads = {a.split(ARM_SEPARATOR)[0] for a in arms}
    return heads.pop() if len(heads) == 1 and not any("[" in a for a in arms) else " + ".join(arms)


def _repetition(ctx: Context, study: Study, section: Section) -> list[dict]:
    """R*_D per arm (two-stage data-constrained fit of the primary metric) and the paired log-ratio against the
    matched baseline, from a seed bootstrap paired across arms."""
    metric = study.primary
    runs = ctx.runs.with_columns(describe_arms(ctx.runs, exclude=(SEED, D, SAMPLES)).alias("objective arm"))
    names = {k[0]: pooled_name(g["arm"].unique(maintain_order=True).to_list())
             for k, g in runs.group_by("objective arm", maintain_order=True)}
    arms = {names[k[0]]: g for k, g in runs.group_by("objective arm", maintain_order=True)
            if repetition.has_repetition_design(g)}
    of_arm = {r["arm"]: names[r["objective arm"]] for r in runs.select("arm", "objective arm").iter_rows(named=True)}
    try:
        points, boot = repetition.repetition(arms, metric, n_boot=ctx.fit.n_boot, seed=ctx.fit.seed)
    except ValueError as e:
        section.text.append(f"{REPETITION}: no fit ({e}).")
        return []
    seeds = ctx.runs[SEED].n_unique()
    rows = [{"arm": a, "metric": metric, "R*_D": r.r_star, "lo": r.lo, "hi": r.hi, "E": r.base["E"],
             "B": r.base["B"], "beta": r.base["beta"], "one-epoch runs": r.epoch_points,
             "fixed-S runs": r.fixed_points} for a, r in points.items()]
    shown = pl.DataFrame([{"arm": r["arm"], "R*_D [95% CI]": fmt_ci(r["R*_D"], r["lo"], r["hi"]),
                           "base law (one epoch)": f"E={fmt(r['E'])}, B={fmt(r['B'])}, beta={fmt(r['beta'])}",
                           "runs (one epoch / fixed S)": f"{r['one-epoch runs']} / {r['fixed-S runs']}"}
                          for r in rows])
    section.tables.append(Table(f"{ctx.grid.key}_repetition",
                                f"Repetition utilization R*_D of 1-{metric} (95% seed-bootstrap CI)",
                                pl.DataFrame(rows), shown))
    section.text.append(
        f"R*_D is the data-constrained law's number of repetitions after which repeated data is worth 1/e of fresh "
        f"data (Muennighoff et al. 2023), fitted per arm in two stages: the base law E + B / D^beta of the error "
        f"1-{metric} from the one-epoch runs, frozen, then R*_D from the runs that repeat their data (S / D - 1 "
        f"repetitions); each arm here pools its runs of both regimes. One model size: the law's model term is a "
        f"constant folded into E. Intervals resample "
        f"seeds, paired across arms; {seeds} seeds allow {repetition.distinct_resamples(seeds)} distinct "
        f"resamples, so the percentile interval is coarse and covers less than its nominal 95%.")
    verdicts = []
    for arm, base in dict.fromkeys((of_arm[a], of_arm[b]) for a, b in claimed_arms(ctx, study)):
        if arm not in points or base not in points:
            continue
        est, lo, hi, n = repetition.log_ratio(boot, points, arm, base)
        verdicts.append(verdict_row(
            study, f"{arm} vs {base}", f"{REPETITION}, log10 ratio arm / baseline (> 0: repeated data keeps more "
            "value)", n, est, lo, hi, float("nan"),
            f"{fmt_ci(est, lo, hi, sign=True)} (R*_D {fmt(points[arm].r_star)} vs {fmt(points[base].r_star)}; "
            f"{n} paired resamples)", stats.verdict((lo, hi), +1) if np.isfinite(lo) else INCONCLUSIVE))
    return verdicts


def reaches_paper_scale(runs: pl.DataFrame) -> bool:
    """Whether a law fitted over these runs' D can be read at the paper's scale: each run saw its data once
    (samples seen grow with D). A law of D at a fixed number of samples seen S describes D up to S only: beyond it
    every D is the same experiment."""
    return SAMPLES not in runs.columns or runs.filter(pl.col(SAMPLES) != pl.col(D)).is_empty()


def _extrapolation(ctx: Context, study: Study, section: Section, fits: dict) -> None:
    """Each one-epoch arm's fitted law of the primary metric at the paper's scale, with its bootstrap interval and
    how many decades beyond its largest measured D that is; arms at fixed samples seen are named and left out."""
    rows, sentences, left_out = [], [], []
    for arm, f in fits.items():
        runs = ctx.runs.filter(pl.col("arm") == arm)
        if not reaches_paper_scale(runs):
            left_out.append(f"{arm} (at most {int(runs[SAMPLES].max()):,} samples seen)")
            continue
        measured = int(runs[D].max())
        decades = float(np.log10(PAPER_SCALE / measured))
        at = scaling.predict(f, np.array([PAPER_SCALE]))
        here = scaling.predict(f, np.array([float(measured)]))
        rows.append({"arm": arm, "metric": study.primary, "D": PAPER_SCALE, "predicted": float(at.point[0]),
                     "lo": float(at.lo[0]), "hi": float(at.hi[0]), "at largest measured D": float(here.point[0]),
                     "decades beyond measured": decades})
        sentences.append(f"{arm}: {fmt_ci(at.point[0], at.lo[0], at.hi[0])} at D = {PAPER_SCALE:.0e}, {decades:.1f} "
                         f"decades beyond its largest measured D = {measured:,} (fitted {fmt(here.point[0])} there)")
    if rows:
        section.tables.append(Table(f"{ctx.grid.key}_extrapolation",
                                    f"Fitted laws of {study.primary} extrapolated to the paper's {PAPER_SCALE:.0e} "
                                    "samples (95% bootstrap band)", pl.DataFrame(rows)))
        section.text.append("Extrapolated to the paper's scale (read these as the laws' shape, not as predictions): "
                            + "; ".join(sentences) + ".")
    if left_out:
        section.text.append(f"Not extrapolated to the paper's {PAPER_SCALE:.0e} samples, since their runs repeat data "
                            "at a fixed number of samples seen, and a law of D at fixed samples seen says nothing "
                            "about D beyond them: " + ", ".join(left_out) + ".")
