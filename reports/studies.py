"""The paper's studies, one per grid: seed statistics per arm, paired comparisons against the baseline,
and the paper's claim beside the measured result with a verdict decided by the 95% intervals.

A study is data (`Study`): its grid, claim, treatment keys (what its arms change; runs pair when they
differ only there), baseline arms, claimed directions, and extra figures and tables (`reports.extras`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from analysis.aggregate import SAME_RUNS, compare_to_baselines, judge_adjusted, seed_stats
from analysis.grids import Grid
from analysis.runs import NORMALISED, PRIMARY, D
from analysis.utilization import FitSettings
from reports import figures
from reports.render import Figure, Section, Table, fmt, fmt_ci

VERDICT_SCHEMA = {"study": pl.String, "claim": pl.String, "comparison": pl.String, "measure": pl.String,
                  "n": pl.Int64, "estimate": pl.Float64, "lo": pl.Float64, "hi": pl.Float64, "p_value": pl.Float64,
                  "result": pl.String, "verdict": pl.String}
LAST_ROLLOUT = "rollout_err/last"  # the longest rollout a run evaluated
DIFFERENCE = "difference in"  # how the measure of a paired comparison's verdict row begins
DESCRIPTIVE = "descriptive: no verdict (protocol)"


@dataclass
class Context:
    """What a study's builders see: the usable runs of its grid (with arm labels) and report settings."""

    grid: Grid
    runs: pl.DataFrame
    curves: pl.LazyFrame
    inference: pl.DataFrame
    colours: dict
    fig_dir: Path | None  # None: tables only, no figures drawn
    fit: FitSettings  # of the scaling-law fits
    workers: int  # processes for the scaling-law fits
    adjusted: dict[tuple[str, str, str], float] = field(default_factory=dict)
    # Holm-adjusted p-value of each claimed comparison (arm, baseline, metric) of a study with a family

    def figure(self, section: Section, name: str, caption: str, draw: Callable[[Path], Path]) -> None:
        """Add the figure that `draw(stem)` writes (PNG path returned) to `section`, unless figures are off."""
        if self.fig_dir is not None:
            section.figures.append(Figure(caption, draw(self.fig_dir / f"{self.grid.key}_{name}")))

    def chance(self, metric: str = PRIMARY) -> float | None:
        """Mean chance level of the primary accuracy over the runs (0 for the chance-normalised accuracy,
        None for other metrics)."""
        if metric == NORMALISED:
            return 0.0
        if metric != PRIMARY or "chance" not in self.runs.columns or self.runs["chance"].null_count() == len(
                self.runs):
            return None
        return float(self.runs["chance"].mean())

    def in_arm_order(self, df: pl.DataFrame) -> pl.DataFrame:
        """`df` sorted by arm in grid trial order (stable within an arm)."""
        order = self.runs.sort("trial")["arm"].unique(maintain_order=True)
        rank = pl.DataFrame({"arm": order, "_rank": range(len(order))})
        return df.join(rank, on="arm", how="left").sort("_rank", maintain_order=True).drop("_rank")

    def resolve(self, metric: str) -> str:
        """A metric name, with LAST_ROLLOUT resolved to the longest rollout_err/k the runs have."""
        if metric != LAST_ROLLOUT:
            return metric
        ks = [int(c.split("/")[1]) for c in self.runs.columns if c.startswith("rollout_err/")
              and c.split("/")[1].isdigit() and self.runs[c].null_count() < len(self.runs)]
        return f"rollout_err/{max(ks)}" if ks else metric


@dataclass(frozen=True)
class Measure:
    """A metric a study compares, with the paper's claimed sign for each arm."""

    metric: str
    claim: Callable[[dict], int]  # claimed sign of arm minus baseline, from the arm's config row (0: none)


@dataclass(frozen=True, eq=False)
class Study:
    """How the report reads one grid: its claim, treatment and baseline arms, measures and family."""

    grid: str
    title: str
    claim_id: str = "no claim"
    claim: str = ""
    treatment: tuple[str, ...] = ()
    baseline: pl.Expr | None = None
    measures: tuple[Measure, ...] = ()
    metrics: tuple[str, ...] = (PRIMARY, "caption_loss")  # shown per arm
    by_scale: bool = False  # seed statistics per arm x D
    per_scale: bool = False  # one comparison per D (else pairs at every D pooled into one)
    primary: str = PRIMARY  # the metric of learning curves, scaling fits and the bar figure
    family: str = ""  # protocol 2: the Holm family of its claimed comparisons ('' = v1's interval rule)
    regime: str = ""  # protocol 2: the encoder regime its runs train in
    part: str = ""  # a second study of the same grid: its section and tables are keyed GRID__PRESET__PART
    descriptive: bool = False  # shown for contrast: its comparisons and fits carry no verdict
    extras: tuple[Callable[[Context, Study, Section], list[dict]], ...] = field(default_factory=tuple)
    # each extra adds its tables and figures to the section and returns its verdict rows


def verdict_frame(rows: list[dict]) -> pl.DataFrame:
    """Verdict rows as a frame of the verdict schema (typed even when empty)."""
    return pl.DataFrame(rows, schema=VERDICT_SCHEMA)


def verdict_row(study: Study, comparison: str, measure: str, n: int, estimate: float, lo: float, hi: float,
                p_value: float, result: str, verdict: str) -> dict:
    """One claim's measured comparison and verdict, as a row of a study's verdict table."""
    return {"study": study.title, "claim": study.claim_id, "comparison": comparison, "measure": measure, "n": n,
            "estimate": estimate, "lo": lo, "hi": hi, "p_value": p_value, "result": result, "verdict": verdict}


def comparison_result(diff: float, lo: float, hi: float, p: float, n: int, p_name: str = "p") -> str:
    """A paired comparison in words: difference [interval]; p; pairs."""
    return f"{fmt_ci(diff, lo, hi, sign=True)}; {p_name}={fmt(p, 2)}; n={n} pairs"


def verdict_table(ctx: Context, study: Study, rows: pl.DataFrame) -> Table:
    """The study's table of claims, measured results and verdicts."""
    shown = rows.select("claim", "comparison", "measure", "result", "verdict")
    return Table(f"{ctx.grid.key}_verdicts", f"{study.claim_id}: claim, measured result, verdict", rows, shown)


def _arm_table(ctx: Context, study: Study) -> Table:
    by = ["arm", D] if study.by_scale else ["arm"]
    metrics = [m for m in study.metrics if m in ctx.runs.columns]
    long = pl.concat([seed_stats(ctx.runs, m, by) for m in metrics]) if metrics else pl.DataFrame()
    cells: dict[tuple, dict] = {}
    for r in long.iter_rows(named=True):
        row = cells.setdefault(tuple(r[c] for c in by), {c: r[c] for c in by} | {"seeds": r["seeds"]})
        row[f"{r['metric']} [95% CI]"] = fmt_ci(r["mean"], r["lo"], r["hi"])
    shown = ctx.in_arm_order(pl.DataFrame(list(cells.values()))) if cells else pl.DataFrame({"arm": []})
    return Table(f"{ctx.grid.key}_arms", "Seed statistics per arm (mean over seeds, 95% Student-t CI)", long, shown)


def comparisons(ctx: Context, study: Study) -> pl.DataFrame:
    """Each measure's paired comparisons of the study's arms against their matched baselines (rows of
    `analysis.aggregate.COMPARISON_SCHEMA` with a `scale` column, null unless `per_scale`), before any
    multiplicity adjustment."""
    scales = sorted(ctx.runs[D].unique().to_list()) if study.per_scale and D in ctx.runs.columns else [None]
    parts = []
    for m in study.measures:
        metric = ctx.resolve(m.metric)
        if metric not in ctx.runs.columns:
            continue
        for scale in scales:
            runs = ctx.runs if scale is None else ctx.runs.filter(pl.col(D) == scale)
            comps = compare_to_baselines(runs, metric, study.baseline, study.treatment,
                                         direction=lambda arm_runs, m=m: m.claim(arm_runs.row(0, named=True)))
            parts.append(comps.with_columns(pl.lit(scale, dtype=pl.Int64).alias("scale")))
    return pl.concat(parts) if parts else pl.DataFrame()


def comparison_key(c: dict) -> tuple[str, str, str]:
    """What identifies a comparison within its study: arm, baseline and metric (at a scale, when per scale)."""
    metric = c["metric"] if c.get("scale") is None else f"{c['metric']}@D={c['scale']}"
    return c["arm"], c["baseline"], metric


def _decided(ctx: Context, study: Study, comps: pl.DataFrame) -> pl.DataFrame:
    """The comparisons with their verdicts: v1's interval rule, or for a study with a family the verdict
    from its Holm-adjusted p-value (`p_holm`)."""
    if not study.family or comps.is_empty():
        return comps
    rows = []
    for c in comps.iter_rows(named=True):
        p = ctx.adjusted.get(comparison_key(c), float("nan")) if c["direction"] else float("nan")
        verdict = c["verdict"] if c["verdict"] == SAME_RUNS else judge_adjusted(c["diff"], p, c["n"], c["direction"])
        rows.append(c | {"p_holm": p, "verdict": verdict})
    return pl.DataFrame(rows, schema=comps.schema | {"p_holm": pl.Float64})


def _comparison_table(ctx: Context, comps: pl.DataFrame) -> Table:
    claimed = {1: "arm > baseline", -1: "arm < baseline", 0: "none"}
    p_columns = [pl.col("p_value").map_elements(lambda p: fmt(p, 2), return_dtype=pl.String).alias("p (sign-flip)")]
    if "p_holm" in comps.columns:
        p_columns += [pl.col(c).map_elements(lambda p: fmt(p, 2), return_dtype=pl.String).alias(name)
                      for c, name in (("t_p_value", "p (t)"), ("p_holm", "p (Holm)"))]
    scale = [pl.col("scale").alias("D")] if comps["scale"].null_count() < len(comps) else []
    shown = comps.select(
        "arm", "baseline", *scale, "metric", "n",
        pl.struct("diff", "lo", "hi").map_elements(lambda s: fmt_ci(s["diff"], s["lo"], s["hi"], sign=True),
                                                   return_dtype=pl.String).alias("difference [95% CI]"),
        *p_columns, pl.col("direction").replace_strict(claimed, return_dtype=pl.String).alias("paper claims"),
        "verdict")
    return Table(f"{ctx.grid.key}_comparisons", "Paired comparisons against the baseline (arm minus baseline)",
                 comps, shown)


def collapse_prefix(arm: str) -> str:
    """'collapsed (k/n): ' for an arm label marked by `analysis.collapse.mark_collapsed`, else ''."""
    found = re.search(r"\[collapsed (\d+/\d+)\]", arm)
    return f"collapsed ({found.group(1)}): " if found else ""


def _baseline_collapse(baseline: str) -> str:
    prefix = collapse_prefix(baseline)
    return f"baseline {prefix}" if prefix else ""


def _claimed_rows(study: Study, comps: pl.DataFrame) -> list[dict]:
    rows = []
    for c in comps.filter(pl.col("direction") != 0).iter_rows(named=True):
        side = ">" if c["direction"] > 0 else "<"
        at = "" if c["scale"] is None else f" at D={c['scale']:,}"
        p = c.get("p_holm", c["p_value"])
        result = comparison_result(c["diff"], c["lo"], c["hi"], p, c["n"], "p_Holm" if "p_holm" in c else "p")
        rows.append(verdict_row(study, f"{c['arm']} vs {c['baseline']}{at}",
                                f"{DIFFERENCE} {c['metric']} (paper: arm {side} baseline)",
                                c["n"], c["diff"], c["lo"], c["hi"], p, result,
                                collapse_prefix(c["arm"]) + _baseline_collapse(c["baseline"]) + c["verdict"]))
    return rows


def build_section(ctx: Context, study: Study) -> tuple[Section, pl.DataFrame]:
    """The study's section of the report, and its verdict rows."""
    g = ctx.grid
    section = Section(g.key, f"{study.title} (grid `{g.name}`, preset `{g.preset}`)", study.claim)
    n_arms = ctx.runs["arm"].n_unique() if not ctx.runs.is_empty() else 0
    section.text.append(f"Usable runs: {len(ctx.runs)}, in {n_arms} arm(s). {g.description}".strip())
    if ctx.runs.is_empty():
        section.text.append("No usable runs yet: nothing to measure.")
        return section, verdict_frame([])
    section.tables.append(_arm_table(ctx, study))
    rows: list[dict] = []
    if study.baseline is not None and study.measures:
        comps = _decided(ctx, study, comparisons(ctx, study))
        if study.descriptive and not comps.is_empty():  # no rule judges them, in this table either
            comps = comps.with_columns(pl.when(pl.col("verdict") == SAME_RUNS).then(pl.col("verdict"))
                                       .otherwise(pl.lit(DESCRIPTIVE)).alias("verdict"))
        if not comps.is_empty():
            section.tables.append(_comparison_table(ctx, comps))
            rows += _claimed_rows(study, comps)
    if study.baseline is not None and not study.by_scale:
        _ablation_figure(ctx, study, section)
    for extra in study.extras:
        rows += extra(ctx, study, section)
    verdicts = verdict_frame(rows)
    if study.descriptive:
        verdicts = verdicts.with_columns(pl.lit(DESCRIPTIVE).alias("verdict"))
    if not verdicts.is_empty():
        section.tables.insert(0, verdict_table(ctx, study, verdicts))
    return section, verdicts


def _ablation_figure(ctx: Context, study: Study, section: Section) -> None:
    metric = study.primary
    if metric not in ctx.runs.columns:
        return
    stats = ctx.in_arm_order(seed_stats(ctx.runs, metric, ["arm"]))
    if stats.is_empty():
        return
    base = ctx.runs.filter(study.baseline)["arm"].unique().to_list()
    ctx.figure(section, "bars", f"{study.title}: {metric} per arm, mean over seeds with 95% CI",
               lambda stem: figures.ablation_bars(stats, ctx.colours, metric, stem, study.title,
                                                  baseline=base[0] if len(base) == 1 else None,
                                                  chance=ctx.chance(metric)))

