"""The at-a-glance summary that opens a demo-scale report (`make demo`): the scale, whether text only learned,
the headline figure and a short table of what held, with the warning that demo-scale verdicts are not the
study's. `python -m reports.glance REPORT_DIR` prints it from the report's tables, ending with where the
report and the full v2 results are."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from analysis.aggregate import seed_stats
from analysis.runs import PRIMARY, SEED
from reports.render import Section, Table, fmt, fmt_ci
from reports.studies import DIFFERENCE, Context, Study

FULL_RESULTS = "reports/results/cpu-v2/report.md"
LEARNED_MARGIN = 0.10  # text only's zs_acc at least this far above chance counts as clearly learned


def _scale(runs: pl.DataFrame) -> str:
    row = runs.row(0, named=True)
    steps = row["train.samples_seen"] // row["train.batch_size"]
    encoder = "a frozen pretrained encoder" if row.get("model.freeze_encoder") else "an encoder trained from scratch"
    return (f"Demo scale: the `{row['model.size']}` model on {row['data.image_size']}x{row['data.image_size']} world-v"
            f"{row['data.world_version']} images, {steps:,} steps of {row['train.batch_size']} images, "
            f"{runs[SEED].n_unique()} seed(s), on {encoder}.")


def _learned(runs: pl.DataFrame, baseline: pl.Expr) -> str:
    base = runs.filter(baseline)
    if base.is_empty():
        return "No text-only run finished, so nothing says whether the models learned."
    acc, chance = float(base[PRIMARY].mean()), float(base["chance"].mean())
    floor = float(base[f"floor/{PRIMARY}"].mean()) if f"floor/{PRIMARY}" in base.columns else float("nan")
    learned = acc >= chance + LEARNED_MARGIN
    return (f"Text only reaches {PRIMARY} {fmt(acc)} against chance {fmt(chance)} and {fmt(floor)} at random init: "
            + ("it learned, clearly above chance." if learned else
               f"it did NOT learn clearly (less than {LEARNED_MARGIN} above chance); read nothing into the arms."))


def glance_section(ctx: Context, study: Study, section: Section, verdicts: pl.DataFrame) -> Section:
    """The summary of one demo-scale study (`section` is its full section, whose headline figure is reused)."""
    stats = ctx.in_arm_order(seed_stats(ctx.runs, study.primary, ["arm"]))
    judged = verdicts.filter(pl.col("measure").str.starts_with(DIFFERENCE))
    verdict_of = {v["comparison"].split(" vs ")[0]: v for v in judged.iter_rows(named=True)}
    baselines = set(ctx.runs.filter(study.baseline)["arm"].to_list())
    rows = []
    for s in stats.iter_rows(named=True):
        v = verdict_of.get(s["arm"])
        rows.append({"arm": s["arm"], "seeds": s["seeds"], study.primary: fmt_ci(s["mean"], s["lo"], s["hi"]),
                     "vs baseline": v["result"].split(";")[0] if v else "baseline" if s["arm"] in baselines else "-",
                     "paper claims": v["measure"].split("(paper: ")[-1].rstrip(")") if v else "-",
                     "held at demo scale?": v["verdict"] if v else "-"})
    out = Section("glance", "At a glance (demo scale: not the study's verdicts)", text=[
        _scale(ctx.runs), _learned(ctx.runs, study.baseline),
        "Verdicts at demo scale are not the study's: a few hundred steps and few seeds decide little. The v2 "
        f"study (the paper's regime, protocol 2) is in `{FULL_RESULTS}`."])
    out.figures += section.figures[:1]
    out.tables.append(Table("glance", "What held at demo scale", pl.DataFrame(rows)))
    return out


def main(report_dir: str) -> None:
    """Print the summary of a demo report: its opening text and table, then where everything is."""
    report = Path(report_dir)
    md = (report / "report.md").read_text()
    start = md.find("## At a glance")
    if start < 0:
        raise SystemExit(f"{report / 'report.md'}: no at-a-glance section (is it a demo-scale report?)")
    text = md[start:].split("\n## ", 1)[0]
    print("\n".join(line for line in text.splitlines() if line and not line.startswith("![")))
    print(f"demo report: {report / 'report.html'} (and report.md); the full v2 results: {FULL_RESULTS}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
