"""Where a sweep's files live in the runs directory; nothing here can point outside it.

    RUNS_DIR/<run_id>/                     one run (flat: the same trial in two grids is one run)
    RUNS_DIR/grids/<grid>__<scale>.json    a grid's membership: its trials, axis values and run ids
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from study.errors import UserError
from study.files import atomic_write
from sweeps.spec import NAME_RE, SCALES, GridSpec, Trial

RUN_ID_RE = re.compile(r"[0-9a-f]{12}")


def run_dir(runs_dir: Path, run_id: str) -> Path:
    """The directory of run `run_id` (a 12-digit hex hash, so it cannot escape `runs_dir`)."""
    if not RUN_ID_RE.fullmatch(run_id):
        raise UserError(f"run id {run_id!r} is not a 12-digit hex hash")
    return runs_dir.resolve() / run_id


def grid_file(runs_dir: Path, grid: str, scale: str) -> Path:
    """The grid's trial list in the runs directory; an error for a name that is not a plain name."""
    if not NAME_RE.fullmatch(grid) or scale not in SCALES:
        raise UserError(f"grid name {grid!r} / preset {scale!r} is not a plain name")
    return runs_dir.resolve() / "grids" / f"{grid}__{scale}.json"


def write_membership(runs_dir: Path, spec: GridSpec, trials: list[Trial]) -> Path:
    """Record (atomically) which runs make up this grid, for status and reports."""
    path = grid_file(runs_dir, spec.name, spec.scale)
    body = {"grid": spec.name, "preset": spec.scale, "spec": str(spec.path.resolve()),
            "description": spec.description, "written_at": time.time(),
            "trials": [{"index": t.index, "run_id": t.run_id, "axes": t.axes} | ({"stage": t.stage} if t.stage else {})
                       | ({"upstream": t.upstream} if t.upstream else {}) for t in trials]}
    atomic_write(path, json.dumps(body, indent=1).encode())
    return path
