"""Launch one grid: write its membership, run every trial through a backend, read states back."""

from __future__ import annotations

import sys
from pathlib import Path

from sweeps.backends import backend, backend_session
from sweeps.execute import TrialTask
from sweeps.layout import run_dir, write_membership
from sweeps.spec import GridSpec, Trial, expand
from sweeps.status import GridProgress, TrialState, collect


def seed_major(trials: list[Trial]) -> list[Trial]:
    """Run order: every cell's first seed before any cell's second, so a grid stopped part way has complete
    seeds to pair (the spec lists seeds innermost)."""
    return sorted(trials, key=lambda t: t.axes.get("seed", 0))


def launch_grid(spec: GridSpec, runs_dir: Path, backend_name: str, options: object,
                retry_failed: bool = False) -> list[TrialState]:
    """Run the grid's trials (completed ones are skipped, partial ones resume); their states after."""
    trials = expand(spec)
    engine = backend(backend_name)
    with backend_session(engine, options):  # an unreachable cluster fails here, before anything is written
        write_membership(runs_dir, spec, trials)
        tasks = [TrialTask(str(run_dir(runs_dir, t.run_id)), t.config.to_dict(), retry_failed=retry_failed)
                 for t in seed_major(trials)]
        print(f"grid {spec.name} (preset {spec.scale}): {len(trials)} trials on {backend_name}", file=sys.stderr)
        with GridProgress(trials, runs_dir):
            engine.launch(tasks, options)
    return collect(trials, runs_dir)
