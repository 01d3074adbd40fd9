"""`unihetero track RUNS_DIR --to tensorboard|wandb|mlflow`: mirror finished runs' records to a tracker."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from study.config import TRACKERS
from study.errors import UserError
from study.runstore import RunStore
from study.tracking import check_installed, replay


def register(sub: argparse._SubParsersAction) -> None:
    """The `track` command's arguments."""
    p = sub.add_parser("track", help="mirror the records of a runs directory's runs to an experiment tracker",
                       description="Send every run's config, metrics and evaluations (as the run store has them) "
                       "to TensorBoard, W&B (online or offline as WANDB_MODE says) or MLflow (RUNS_DIR/mlflow.db "
                       "unless MLFLOW_TRACKING_URI is set; experiment MLFLOW_EXPERIMENT_NAME or the grid), "
                       "grouped by grid and arm, in step order. Records a destination already has (trackers.json "
                       "in each run directory) are not sent again.")
    p.add_argument("runs_dir", type=Path, help="runs directory (run directories and grids/ membership files)")
    p.add_argument("--to", required=True, choices=TRACKERS, help="the tracker")
    p.set_defaults(func=run_track)


def run_track(args: argparse.Namespace) -> int:
    """`unihetero track RUNS_DIR --to T`: mirror every run's records to an experiment tracker."""
    if not args.runs_dir.is_dir():
        raise UserError(f"runs directory '{args.runs_dir}' does not exist")
    check_installed([args.to])
    runs = sorted(p.parent for p in args.runs_dir.glob("*/config.yaml"))
    sent, skipped = 0, 0
    for run_dir in runs:
        store = RunStore(run_dir)
        try:
            cfg = store.config()
        except UserError as e:  # one unreadable run does not stop the others; it is named, not dropped silently
            print(f"skipped: {e}", file=sys.stderr)
            skipped += 1
            continue
        sent += replay(run_dir, [args.to], store.records, cfg)
    print(f"{args.to}: {len(runs) - skipped} run(s), {sent} record(s) sent from {args.runs_dir}"
          + (f"; {skipped} skipped (named above)" if skipped else ""))
    return 0
