"""The lead of a study with a machine-readable protocol (protocol 3 on): each planned comparison decided by the
protocol's sequential rule at its recorded looks (`looks/`, written by `sweep launch --until-decided`; without
them, one look at the pairs there are), with its verdict in four words: superior, inferior, equivalent within
+-delta, or inconclusive with the seeds that would decide it; beside it the mean difference, the TOST interval, the
seeds used, and how much of the spread is the noise of the held-out images (analysis.image_noise). Pairs that came
after the last recorded look (a wave in progress) are counted, not looked at: a look the procedure did not take
would spend the level at a point it never planned.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import polars as pl

from analysis.image_noise import image_noise
from analysis.power import MAX_SEEDS
from analysis.protocol import Protocol, membership, pairs
from analysis.runs import NORMALISED
from analysis.sequential import EQUIVALENT, INCONCLUSIVE, OPEN, decide
from reports.render import Section, Table, fmt, fmt_ci
from study.runstore import read_jsonl

PROTOCOL_FILE = "protocol.yaml"  # beside the runs directory


def recorded_looks(runs_dir: Path, grid: str) -> dict[str, list[dict]]:
    """Each comparison's records at its recorded looks (every preset of the grid, in order)."""
    looks: dict[str, list[dict]] = {}
    for path in sorted((runs_dir / "looks").glob(f"{grid}__*.jsonl")):
        for look in read_jsonl(path):
            for cid, rec in look.get("comparisons", {}).items():
                looks.setdefault(cid, []).append(rec)
    return looks


def at_looks(differences: list[float], sizes: list[int]) -> tuple[list[float], list[int], int]:
    """The differences the recorded looks decided on (the first pairs in seed order, up to the last look's), the
    look sizes to decide them at, and how many pairs came after the last look. Without a recorded look, or with
    fewer pairs than the last look had (records missing here), one look at the pairs there are."""
    if sizes and len(differences) >= sizes[-1]:
        return differences[:sizes[-1]], sizes, len(differences) - sizes[-1]
    return differences, [k for k in sizes if k < len(differences)] + [len(differences)], 0


def verdict_words(verdict: str, margin: float, needed: int | None, n: int, since: int = 0) -> str:
    """The verdict as the lead table says it; `since`: pairs that came after the last look, not looked at yet."""
    later = f"; {since} more pair(s) since, not looked at yet" if since else ""
    if verdict == EQUIVALENT:
        return f"equivalent within +-{margin:g}"
    if verdict in (OPEN, INCONCLUSIVE):
        if n < 2:
            return ("not started" if n == 0 else "open at 1 seed: its variance is not measured yet") + later
        more = f"{needed} seeds would decide it" if needed else f"even {MAX_SEEDS:,} seeds would not decide it"
        return f"{verdict} at {n} seeds: {more}{later}"
    return verdict


def difference_words(mean: float, lo: float, hi: float, n: int) -> str:
    """The mean difference with its TOST interval; an interval a look's boundary leaves unbounded (an early look
    of O'Brien-Fleming spending, which spends almost none of the level) says so instead of being left out."""
    if n >= 2 and math.isinf(lo) and math.isinf(hi):
        return f"{fmt(mean, 3, True)} [unbounded at this look]"
    return fmt_ci(mean, lo, hi, sign=True)


def decisions(runs_dir: Path, runs: pl.DataFrame, protocol: Protocol) -> pl.DataFrame:
    """One row per planned comparison: its decision at its looks."""
    values = {m: dict(zip(runs["run_id"].to_list(), runs[m].to_list(), strict=True))
              for m in {c.metric for c in protocol.comparisons} if m in runs.columns}
    rows = []
    for c in protocol.comparisons:
        found = sorted(pairs(membership(runs_dir, c.grid), c), key=lambda p: p[2].get("seed", 0))
        metric = values.get(c.metric, {})
        kept = [(a, b) for a, b, _ in found if metric.get(a) is not None and metric.get(b) is not None]
        recorded = recorded_looks(runs_dir, c.grid).get(c.id, [])
        diffs, looks, since = at_looks([metric[a] - metric[b] for a, b in kept], [int(r["n"]) for r in recorded])
        kept = kept[:len(diffs)]
        d = decide(diffs, looks, protocol.plan(c), c.higher_is_better)
        if d.verdict == OPEN and recorded and not since and recorded[-1].get("verdict") == INCONCLUSIVE:
            d = dataclasses.replace(d, verdict=INCONCLUSIVE)  # the launch ended it: another wave would pass the cap
        noise = image_noise([(runs_dir / a, runs_dir / b) for a, b in kept]) if c.metric == NORMALISED else None
        rows.append({"family": c.family, "comparison": c.id, "grid": c.grid, "metric": c.metric,
                     "claim": c.claim, "n": d.n, "looks": len(looks), "since_last_look": since, "mean": d.mean,
                     "sd": d.sd, "lo": d.equivalence_interval[0], "hi": d.equivalence_interval[1],
                     "margin": c.margin, "alpha": protocol.plan(c).alpha, "verdict": d.verdict,
                     "seeds_to_decide": d.seeds_to_decide, "seed_se": d.sd / d.n ** 0.5 if d.n > 1 else None,
                     "image_noise_sd": noise, "words": verdict_words(d.verdict, c.margin, d.seeds_to_decide, d.n,
                                                                     since)})
    return pl.DataFrame(rows, infer_schema_length=None)


def decisions_section(runs_dir: Path, runs: pl.DataFrame, protocol: Protocol) -> Section:
    """The report's lead section: the decisions table with the text that says how to read it."""
    data = decisions(runs_dir, runs, protocol)
    text = [f"Protocol {protocol.number} (`{protocol.path.name}` beside the runs directory): each comparison is the "
            "paired difference arm minus baseline over seeds, tested at its recorded looks against boundaries from "
            f"{protocol.spending.replace('_', '-')} alpha spending (the family's alpha {protocol.alpha:g} split "
            "over its comparisons). Superior / inferior: the difference test crossed its boundary (better / worse "
            "on the metric); equivalent within +-delta: both one-sided tests of TOST crossed theirs; otherwise "
            "open, or inconclusive at the seed cap, with the seeds that would decide it (pairs of a fixed-sample "
            f"design with power {protocol.power:g} at the comparison's level, at the observed difference and "
            "variance: the size of a follow-up study; the smaller of the difference and the equivalence question). "
            "The interval is TOST's at the last look's one-sided level; at an early look the spending function "
            "may leave too little of the level for any finite boundary (O'Brien-Fleming spending at the first of "
            "several looks does), and the interval is unbounded: such a look cannot decide, it only adds seeds. "
            "Pairs that came after the last look (a wave still training) are counted beside the verdict, not "
            "tested: the procedure looks only when a wave is complete. Image noise: the standard deviation of "
            "the mean difference over bootstrap resamples of the held-out images, beside the seed-to-seed "
            "standard error."]
    shown = data.select(
        "family", "comparison", "metric",
        pl.struct("mean", "lo", "hi", "n").map_elements(lambda r: difference_words(r["mean"], r["lo"], r["hi"], r["n"]),
                                                        return_dtype=pl.String).alias("difference [TOST interval]"),
        "n", pl.col("seed_se").map_elements(lambda x: fmt(x, 2), return_dtype=pl.String).fill_null("-")
        .alias("seed s.e."),
        pl.col("image_noise_sd").map_elements(lambda x: fmt(x, 2), return_dtype=pl.String).fill_null("-")
        .alias("image noise"),
        pl.col("words").alias("verdict"))
    section = Section("decisions", "Lead table: each planned comparison decided", text=text)
    section.tables.append(Table("decisions", "Planned comparisons: difference, seeds, verdict", data, shown))
    return section
