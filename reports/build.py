"""The report of a runs directory: `report.md`, a self-contained `report.html`, every table as CSV under
`tables/` and every figure as PNG and SVG under `figures/`.

Sections: the verdicts of every study, one section per grid found in `RUNS_DIR/grids/` (the paper's
layout for the grids it has claims about), runs outside any grid, and the runs left out of statistics with
their reasons; a study whose protocol is machine-readable (`protocol.yaml` beside the runs directory) opens with
its planned comparisons decided (`reports.decisions`). Nothing in it depends on the time or the machine, so the same
runs give the same report. An erratum kept with the records (`RUNS_DIR/ERRATUM.md`: what was measured wrongly, and
how) opens the report.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import polars as pl

from analysis.aggregate import MIN_PAIRS
from analysis.collapse import mark_collapsed
from analysis.grids import Grid, read_grids
from analysis.protocol import load_protocol
from analysis.runs import RunSet, describe_arms, load_runs
from analysis.utilization import FitSettings
from reports import figures
from reports.decisions import PROTOCOL_FILE, decisions_section
from reports.families import holm_adjustments, lead_section
from reports.glance import glance_section
from reports.paper import ALL_STUDIES, FAMILY_SIZES, STUDIES, studies_for
from reports.render import Section, Table, render_html, render_markdown, write_tables
from reports.studies import VERDICT_SCHEMA, Context, Study, build_section

TITLE = "UniHetero reproduction report"
ERRATUM = "ERRATUM.md"
DEMO = "demo"  # the scale preset whose report opens with an at-a-glance summary
FIT = FitSettings(n_boot=100, boot_starts=4, starts=20)
DECISION_RULE = (
    "Verdicts come from the 95% interval of the paired difference (arm minus baseline over runs that differ "
    "only in the studied setting: same seed, same data): “reproduced” when it excludes 0 on the paper's "
    "side, “not reproduced” when it excludes 0 on the other side, “inconclusive at this scale” when it "
    f"contains 0, “inconclusive: too few pairs” when it rests on fewer than {MIN_PAIRS}. Primary metric: "
    "`zs_acc`, held-out zero-shot accuracy over size, colour, shape and location of every object. The studies "
    "of protocol 2 (the paper's regime, in the lead table) are judged by that protocol's rule instead: "
    "Holm-adjusted p-values, `zs_norm`.")


def _other_runs(runs: RunSet, grids: list[Grid]) -> Grid | None:
    """Usable runs outside every grid, as a pseudo-grid labelled by the config keys that vary."""
    members = {r for g in grids for r in g.members["run_id"].to_list()}
    other = runs.usable.filter(~pl.col("run_id").is_in(list(members)))
    if other.is_empty():
        return None
    table = pl.DataFrame({"run_id": other["run_id"], "trial": range(len(other)), "arm": describe_arms(other)})
    return Grid("runs", "any", "Runs that no grid membership file lists.", table)


def _status_section(runs: RunSet, grids: list[Grid]) -> Section:
    counts = runs.runs.group_by("state").agg(pl.len().alias("runs"), pl.col("usable").sum().alias("usable"))
    section = Section("status", "Runs: status, and runs left out of statistics")
    section.tables.append(Table("run_status", "Run directories by state", counts.sort("state")))
    problems = runs.problems
    section.tables.append(Table("problem_runs", "Runs left out of statistics (usable = false) or with warnings",
                                problems))
    present = set(runs.runs["run_id"].to_list())
    missing = [{"grid": g.key, "trial": t, "run_id": r, "arm": a}
               for g in grids for r, t, a in g.members.select("run_id", "trial", "arm").iter_rows()
               if r not in present]
    if missing:
        section.tables.append(Table("missing_runs", "Grid trials without a run directory (not started)",
                                    pl.DataFrame(missing)))
    return section


def _summary(verdicts: list[pl.DataFrame]) -> Section:
    rows = pl.concat(verdicts) if verdicts else pl.DataFrame(schema=VERDICT_SCHEMA)
    section = Section("verdicts", "Verdicts: the paper's claims at this scale", text=[DECISION_RULE])
    shown = rows.select("study", "claim", "comparison", "measure", "result", "verdict")
    section.tables.append(Table("verdicts", "Every claim tested, with its measured result", rows, shown))
    return section


def build_report(runs_dir: Path | str, out_dir: Path | str, *, fit: FitSettings = FIT, workers: int = 1,
                 draw_figures: bool = True) -> Path:
    """Write the report of `runs_dir` into `out_dir` (its figures/ and tables/ replaced); returns report.html.
    `fit`: bootstrap settings of the scaling-law fits (each fit costs about n_boot * boot_starts L-BFGS runs of
    5-15 ms: raise them for a final report); `workers`: processes for the fits; `draw_figures` False writes
    the tables and text only."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    runs, grids = load_runs(runs_dir), read_grids(runs_dir)
    notes: dict[str, list[str]] = {}
    for i, grid in enumerate(grids):
        grids[i], notes[grid.key] = mark_collapsed(grid, runs.usable)
    order = list(STUDIES)
    grids.sort(key=lambda g: (order.index(g.name) if g.name in order else len(order), g.name, g.preset))
    other = _other_runs(runs, grids)
    studies: list[tuple[Grid, Study]] = [(replace(g, part=s.part), s) for g in grids for s in studies_for(g.name)]
    if other is not None:
        studies.append((other, Study("runs", "Runs outside any grid", by_scale=True)))
    colours = figures.palette(a for g, _ in studies for a in g.members.sort("trial")["arm"].to_list())
    for sub in ("figures", "tables"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    fig_dir = out_dir / "figures" if draw_figures else None

    contexts = [(Context(grid, runs.usable.join(grid.members, on="run_id", how="inner").sort("trial"), runs.curves,
                         runs.inference, colours, fig_dir, fit, workers), study) for grid, study in studies]
    adjusted = holm_adjustments(contexts, FAMILY_SIZES)
    sections, verdicts, opening = [], [], []
    for ctx, study in contexts:
        ctx.adjusted = adjusted.get(ctx.grid.key, {})
        section, rows = build_section(ctx, study)
        section.text += notes.get(replace(ctx.grid, part="").key, [])
        sections.append(section)
        verdicts.append(rows)
        if ctx.grid.preset == DEMO and study.baseline is not None and not ctx.runs.is_empty():
            opening.append(glance_section(ctx, study, section, rows))
    lead = lead_section([(study, rows) for (_, study), rows in zip(contexts, verdicts, strict=True)],
                        ALL_STUDIES)
    opening += [lead] if lead else []
    protocol = runs_dir.parent / PROTOCOL_FILE  # a study with a machine-readable protocol: its decisions lead
    if protocol.is_file():
        opening.insert(0, decisions_section(runs_dir, runs.usable, load_protocol(protocol)))
    sections = [*opening, _summary(verdicts), *sections, _status_section(runs, grids)]

    usable = int(runs.runs["usable"].sum()) if len(runs.runs) else 0
    preamble = [f"Runs directory `{runs_dir}`: {len(runs.runs)} run directories, {usable} usable, "
                f"{len(runs.runs) - usable} left out (listed at the end); {len(grids)} grid membership file(s)."]
    if (runs_dir / ERRATUM).is_file():
        preamble.insert(0, (runs_dir / ERRATUM).read_text().strip())
    out_dir.mkdir(parents=True, exist_ok=True)
    write_tables(sections, out_dir / "tables")
    (out_dir / "report.md").write_text(render_markdown(TITLE, preamble, sections, out_dir))
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(TITLE, preamble, sections))
    return html_path
