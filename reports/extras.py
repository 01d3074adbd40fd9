"""Study-specific parts of the report: learning curves and their crossover, the compute-matched view, masking
histograms, rollout error, inference-time scaling, decoded images (data utilization: `reports.data_use`). Each adds
tables and figures to a section and returns its verdict rows (`reports.studies.VERDICT_SCHEMA`)."""

from __future__ import annotations

import dataclasses
import warnings
import zipfile

import numpy as np
import polars as pl

from analysis import stats, utilization
from analysis.aggregate import (
    compare,
    curve_stats,
    judge,
    matched_baseline,
    mean_intervals,
    seed_stats,
    values_at,
    with_pair_key,
)
from analysis.runs import PRIMARY
from reports import figures
from reports.render import Section, Table, fmt, fmt_ci
from reports.studies import Context, Study, comparison_result, verdict_row

INCONCLUSIVE = "inconclusive at this scale"
INFERENCE_METRICS = {"views": PRIMARY, "diffusion_steps": "psnr"}


def claimed_arms(ctx: Context, study: Study) -> list[tuple[str, str]]:
    """(arm, matched baseline) for each arm the study's first measure claims beats its baseline (none for a study
    without a baseline, such as the pilot)."""
    if study.baseline is None or not study.measures:
        return []
    baselines = ctx.runs.filter(study.baseline)["arm"].unique(maintain_order=True).to_list()
    out = []
    for arm, group in ctx.in_arm_order(ctx.runs.filter(~study.baseline)).group_by("arm", maintain_order=True):
        if study.measures[0].claim(group.row(0, named=True)) != 1:
            continue
        base = matched_baseline(ctx.runs, arm[0], baselines, study.treatment)
        if base is not None:
            out.append((arm[0], base))
    return out


def _paired_runs(runs: pl.DataFrame, arm: str, base: str, treatment: tuple[str, ...]) -> pl.DataFrame:
    keyed = with_pair_key(runs.filter(pl.col("arm").is_in([arm, base])), treatment)
    common = set(keyed.filter(pl.col("arm") == arm)["pair"]) & set(keyed.filter(pl.col("arm") == base)["pair"])
    return keyed.filter(pl.col("pair").is_in(list(common))).drop("pair")


def crossover_row(ctx: Context, study: Study, runs: pl.DataFrame, arm: str, base: str, where: str = "") -> dict:
    """Figure 4's claim (the arm starts lower and overtakes): reproduced when the paired difference at the
    first evaluation after initialisation is below 0 and at the last one above 0, both by their intervals."""
    paired, metric = _paired_runs(runs, arm, base, study.treatment), study.primary
    cs = curve_stats(ctx.curves, paired, metric)
    a, b = cs.filter(pl.col("arm") == arm), cs.filter(pl.col("arm") == base)
    cross = utilization.crossover(a, b)
    common = sorted((set(a["samples_seen"]) & set(b["samples_seen"])) - {0})
    measure = f"learning curves of {metric} vs samples seen{where}: starts lower, overtakes"
    ends = [compare(values_at(ctx.curves, paired, metric, s), metric, arm, base, study.treatment, sign)
            for s, sign in ((common[0], -1), (common[-1], +1))] if len(common) >= 2 else [None]
    if None in ends:
        return verdict_row(study, f"{arm} vs {base}", measure, 0, float("nan"), float("nan"), float("nan"),
                           float("nan"), cross.text, INCONCLUSIVE)
    first, last = ends
    if "not reproduced" in (first["verdict"], last["verdict"]):
        verdict = "not reproduced"
    elif first["verdict"] == last["verdict"] == "reproduced":
        verdict = "reproduced"
    else:
        verdict = INCONCLUSIVE
    result = (f"{cross.text}. Difference at {common[0]:,} samples: "
              f"{fmt_ci(first['diff'], first['lo'], first['hi'], sign=True)}; at {common[-1]:,}: "
              f"{fmt_ci(last['diff'], last['lo'], last['hi'], sign=True)} (n={last['n']})")
    return verdict_row(study, f"{arm} vs {base}", measure, last["n"],
                       cross.samples_seen if cross.samples_seen is not None else float("nan"),
                       float("nan"), float("nan"), last["p_value"], result, verdict)


def learning_curves(ctx: Context, study: Study, section: Section) -> list[dict]:
    """Learning curves of the primary metric per arm, and the crossover verdict of each claimed arm."""
    metric = study.primary
    curves = ctx.in_arm_order(curve_stats(ctx.curves, ctx.runs, metric))
    if curves.is_empty():
        return []
    ctx.figure(section, "learning", f"{metric} vs training samples seen per arm (mean over seeds, 95% CI band); "
               "paper Figure 4 compares these curves",
               lambda stem: figures.learning_curves(curves, ctx.colours, metric, stem,
                                                    f"{study.title}: learning curves", ctx.chance(metric)))
    return [crossover_row(ctx, study, ctx.runs, arm, base) for arm, base in claimed_arms(ctx, study)]


def decoded_images(ctx: Context, study: Study, section: Section) -> list[dict]:
    """Originals next to the pixel decoder's reconstructions, first seed of each pixel arm."""
    samples = {}
    for arm, group in ctx.in_arm_order(ctx.runs).group_by("arm", maintain_order=True):
        path = group.sort("train.seed")["path"][0]
        try:
            with np.load(f"{path}/samples.npz") as z:
                samples[arm[0]] = (z["original"], z["decoded"])
        except FileNotFoundError:
            continue
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
            warnings.warn(f"{path}/samples.npz unreadable ({e.__class__.__name__}), left out", stacklevel=2)
    if samples:
        ctx.figure(section, "decoded", "Held-out originals (top) and decoded images (bottom) per pixel arm",
                   lambda stem: figures.decoded_images(samples, stem, "held-out images and pixel-decoder output"))
    return []


def compute_matched(ctx: Context, study: Study, section: Section) -> list[dict]:
    """The compute-matched view: the primary metric vs training FLOPs per arm (every component, each second
    forward included, as the trainer counts them), with the FLOPs per training sample of each arm."""
    metric = study.primary
    last = (ctx.curves.filter((pl.col("source") == "train") & (pl.col("metric") == "flops")
                              & pl.col("run_id").is_in(ctx.runs["run_id"].to_list()) & (pl.col("samples_seen") > 0))
            .sort("samples_seen").group_by("run_id").last().collect())
    if last.is_empty():
        return []
    rates = (last.join(ctx.runs.select("run_id", "arm"), on="run_id")
             .group_by("arm", maintain_order=True)
             .agg((pl.col("value") / pl.col("samples_seen")).mean().alias("flops_per_sample"), pl.len().alias("runs")))
    curves = ctx.in_arm_order(curve_stats(ctx.curves, ctx.runs, metric)).join(rates, on="arm")
    curves = curves.with_columns((pl.col("samples_seen") * pl.col("flops_per_sample")).alias("train_flops"))
    section.tables.append(Table(f"{ctx.grid.key}_flops", "Training FLOPs per sample per arm (all components)",
                                ctx.in_arm_order(rates)))
    ctx.figure(section, "compute", f"{metric} vs training FLOPs per arm (mean over seeds, 95% CI band): the "
               "compute-matched view", lambda stem: figures.learning_curves(
                   curves, ctx.colours, metric, stem, f"{study.title}: compute-matched", ctx.chance(metric),
                   x="train_flops"))
    return []


def masking_histograms(ctx: Context, study: Study, section: Section) -> list[dict]:
    """The masking probabilities each arm's configured distribution draws (arms that differ only in
    per-sample vs per-batch drawing, or in parameters their distribution ignores, share a panel)."""
    import torch

    from study.config import MaskingConfig
    from study.masking import draw_probabilities

    names = [f.name for f in dataclasses.fields(MaskingConfig)]
    panels: dict[bytes, tuple[list[str], np.ndarray]] = {}
    for arm, group in ctx.in_arm_order(ctx.runs).group_by("arm", maintain_order=True):
        row = group.row(0, named=True)
        cfg = MaskingConfig(**{n: row[f"masking.{n}"] for n in names})
        p = draw_probabilities(cfg, 20_000, torch.Generator().manual_seed(0)).numpy()
        panels.setdefault(p.tobytes(), ([], p))[0].append(arm[0])
    draws = {" = ".join(arms): p for arms, p in panels.values()}
    colours = {label: ctx.colours[label.split(" = ")[0]] for label in draws}
    ctx.figure(section, "masking", "Masking probabilities drawn by each arm's distribution (20,000 draws; arms "
               "with the same distribution share a panel)",
               lambda stem: figures.masking_histograms(draws, colours, stem, "masking probability per arm"))
    return []


def rollout(ctx: Context, study: Study, section: Section) -> list[dict]:
    """Free-running rollout error by step per arm."""
    ks = sorted(int(c.split("/")[1]) for c in ctx.runs.columns
                if c.startswith("rollout_err/") and c.split("/")[1].isdigit())
    parts = [seed_stats(ctx.runs, f"rollout_err/{k}", ["arm"]).with_columns(pl.lit(k).alias("k")) for k in ks]
    long = ctx.in_arm_order(pl.concat(parts)) if parts else pl.DataFrame()
    if long.is_empty():
        return []
    ctx.figure(section, "rollout", "Free-running rollout error (1 - cosine to the true next representation) by "
               "step, mean over seeds with 95% CI",
               lambda stem: figures.rollout_errors(long, ctx.colours, stem, "rollout error by step"))
    section.tables.append(Table(f"{ctx.grid.key}_rollout", "Rollout error by step", long))
    return []


def inference_scaling(ctx: Context, study: Study, section: Section) -> list[dict]:
    """Metric vs inference FLOPs per arm, and the verdict on more compute giving better outputs: paired
    over runs, the metric at the largest setting minus at the smallest."""
    inf = ctx.inference.join(ctx.runs.select("run_id", "arm", "trial"), on="run_id")
    inf = inf.filter(pl.any_horizontal([(pl.col("sweep") == s) & (pl.col("metric") == m)
                                        for s, m in INFERENCE_METRICS.items()]))
    if inf.is_empty():
        section.text.append("No inference_scaling.json in these runs (eval.inference_scaling off?).")
        return []
    verdicts = []
    table = mean_intervals(inf.sort("trial", "sweep", "setting"), "value", ["arm", "sweep", "setting", "metric"],
                           [pl.col("inference_flops").mean()])
    table = table.select("arm", "sweep", "setting", "metric", "inference_flops", "n", "mean", "lo", "hi")
    for (arm, sweep, metric), g in inf.group_by(["arm", "sweep", "metric"], maintain_order=True):
        lo_s, hi_s = g["setting"].min(), g["setting"].max()
        wide = g.filter(pl.col("setting") == hi_s).select("run_id", pl.col("value").alias("a")).join(
            g.filter(pl.col("setting") == lo_s).select("run_id", pl.col("value").alias("b")), on="run_id")
        if lo_s == hi_s or wide.is_empty():
            continue
        c = stats.paired(wide["a"].to_numpy(), wide["b"].to_numpy())
        verdicts.append(verdict_row(study, f"{arm}: {sweep} {hi_s} vs {lo_s}",
                                    f"difference in {metric} (claim: more compute is better)", c.n,
                                    c.mean_diff, c.lo, c.hi, c.p_value,
                                    comparison_result(c.mean_diff, c.lo, c.hi, c.p_value, c.n),
                                    judge(c.lo, c.hi, c.n, +1)))
    ctx.figure(section, "inference", "Metric vs inference FLOPs per image (labels: K views or diffusion steps), "
               "mean over seeds with 95% CI",
               lambda stem: figures.inference_scaling(table, ctx.colours, stem, "inference-time scaling"))
    shown = table.select("arm", "sweep", "setting", "metric", pl.col("inference_flops").map_elements(
        lambda x: fmt(x, 3), return_dtype=pl.String), "n", pl.struct("mean", "lo", "hi").map_elements(
        lambda s: fmt_ci(s["mean"], s["lo"], s["hi"]), return_dtype=pl.String).alias("mean [95% CI]"))
    section.tables.append(Table(f"{ctx.grid.key}_inference", "Inference-time scaling", table, shown))
    return verdicts
