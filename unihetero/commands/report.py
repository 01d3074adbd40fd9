"""`unihetero report` (the report of a runs directory) and `unihetero reproduce` (the paper's grids run
through sweeps, resuming what exists, then the report)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from study.errors import UserError
from sweeps.spec import GRID_DIR, SCALES, GridSpec, load_spec, pipeline
from unihetero.commands.argtypes import nonnegative_int, positive_int
from unihetero.commands.sweep import add_backend_args, backend_options


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="report directory (default: RUNS_DIR/report)")
    p.add_argument("--bootstrap", type=nonnegative_int, default=100, metavar="B",
                   help="bootstrap resamples per scaling-law fit (0: no intervals; default 100)")
    p.add_argument("--boot-starts", type=positive_int, default=4, metavar="S",
                   help="random grid starts per bootstrap refit (default 4; more for a final report)")
    p.add_argument("--fit-workers", type=positive_int, default=min(4, os.cpu_count() or 1), metavar="N",
                   help="processes for the scaling-law fits (default: cores, at most 4)")
    p.add_argument("--no-figures", action="store_true", help="tables and text only (no PNG/SVG figures)")


def _grid_names() -> list[str]:
    return sorted(p.stem for p in GRID_DIR.glob("*.yaml"))


def register(sub: argparse._SubParsersAction) -> None:
    """The `report` and `reproduce` commands' arguments."""
    p = sub.add_parser("report", help="write report.md, report.html, tables (CSV) and figures of a runs directory")
    p.add_argument("runs_dir", help="runs directory (run directories and grids/ membership files)")
    _report_args(p)
    p.set_defaults(func=run_report)

    r = sub.add_parser("reproduce", help="run the paper's grids (resuming what exists), then write the report")
    r.add_argument("study", nargs="?", default="all", choices=[*_grid_names(), "all"],
                   help="one grid of sweeps/grids, or all (default)")
    r.add_argument("--preset", required=True, choices=SCALES, help="scale preset of the grids")
    r.add_argument("--protocol", type=int, choices=(1, 2, 3), default=1,
                   help="with all: the grids of study protocol 1 (the v1 study, default), 2 (the paper's regime) or 3 "
                        "(the study that decides); calibration and pilot grids outside a study (protocol 0) run only "
                        "by name")
    r.add_argument("--runs-dir", default="runs", help="where run directories live (default: runs)")
    add_backend_args(r)
    _report_args(r)
    r.set_defaults(func=run_reproduce)


def _write_report(runs_dir: Path, out: str | None, args: argparse.Namespace) -> None:
    from analysis.utilization import FitSettings
    from reports.build import FIT, build_report

    start = time.perf_counter()
    fit = FitSettings(n_boot=args.bootstrap, boot_starts=args.boot_starts, starts=FIT.starts)
    html = build_report(runs_dir, Path(out) if out else runs_dir / "report", fit=fit, workers=args.fit_workers,
                        draw_figures=not args.no_figures)
    print(f"report: {html} and {html.with_suffix('.md')} ({time.perf_counter() - start:.1f} s)")


def run_report(args: argparse.Namespace) -> int:
    """`unihetero report RUNS_DIR`: write the report of a runs directory."""
    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"runs directory '{runs_dir}' does not exist")
    _write_report(runs_dir, args.out, args)
    return 0


def _launch(spec: GridSpec, args: argparse.Namespace, runs_dir: Path) -> bool:
    """Run one grid (resuming: completed trials are skipped); True when every trial completed."""
    from sweeps.launch import launch_grid
    from sweeps.status import counts_line

    states = launch_grid(spec, runs_dir, args.backend, backend_options(args, spec), args.retry_failed)
    print(f"grid {spec.name}: {counts_line(states)}")
    return all(s.state == "completed" for s in states)


def run_reproduce(args: argparse.Namespace) -> int:
    """`unihetero reproduce STUDY`: run a paper study's grids (resuming what exists), then write its report."""
    from reports.paper import STUDIES
    from sweeps.launch import check_trial_inputs

    runs_dir = Path(args.runs_dir)
    order = list(STUDIES)
    grids = sorted(_grid_names(), key=lambda n: (order.index(n) if n in order else len(order), n)) \
        if args.study == "all" else [args.study]
    specs = []
    for grid in grids:
        try:
            spec = load_spec(grid, args.preset)
        except UserError as e:
            if args.study != "all" or "no preset" not in str(e):
                raise
            print(f"skipping grid {grid}: {e}", file=sys.stderr)
            continue
        if args.study == "all" and spec.protocol != args.protocol:
            continue
        specs.append(spec)
    if not specs:
        raise UserError(f"no grid has a preset '{args.preset}'")
    for spec in specs:  # a preset whose paths are placeholders stops here, before the runs directory is made
        check_trial_inputs(spec, pipeline(spec))
    runs_dir.mkdir(parents=True, exist_ok=True)
    complete = [_launch(spec, args, runs_dir) for spec in specs]
    _write_report(runs_dir, args.out, args)
    return 0 if all(complete) else 1
