"""What a backend said about the trials it could not run, kept in the runs directory so that a later `sweep status`
shows it beside them too (the run store holds nothing of a job that never started, and shows a trial whose worker
process died as interrupted only).

    RUNS_DIR/launches/<grid>__<scale>.json   {run_id: {"reason": "BACKEND backend: ...", "at": unix time}}

Each launch replaces the entries of the trials it ran: a trial that ran cleanly since loses its entry. An entry older
than its run's last status change is not shown (something ran the trial after that launch). Launches of one grid at
once (two shells, say) update the file in turn, under an exclusive lock on `<file>.lock`, so neither drops the
other's entries.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from study.files import atomic_write
from sweeps.layout import run_dir
from sweeps.spec import GridSpec, Trial
from sweeps.status import TrialState

LAUNCHES = "launches"


def errors_file(runs_dir: Path, spec: GridSpec) -> Path:
    """Where a grid's launches keep the backend's reasons for trials that did not run."""
    return Path(runs_dir).resolve() / LAUNCHES / f"{spec.name}__{spec.scale}.json"


def read_errors(runs_dir: Path, spec: GridSpec) -> dict[str, dict]:
    """The recorded entries by run id ({} when there are none or the file cannot be read)."""
    try:
        body = json.loads(errors_file(runs_dir, spec).read_text())
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def record_errors(runs_dir: Path, spec: GridSpec, trials: list[Trial], records: list[dict],
                  backend_name: str) -> None:
    """Store each error record of this launch's `trials`, replacing their earlier entries (nothing is written when
    there is nothing to store or clear)."""
    reasons = {Path(r["run_dir"]).name: f"{backend_name} backend: {r.get('reason', '')}" for r in records
               if r.get("outcome") == "error" and r.get("run_dir")}
    launched = {t.run_id for t in trials}
    path = errors_file(runs_dir, spec)
    if not reasons and not path.exists():
        return
    with _exclusive(path):
        known = read_errors(runs_dir, spec)
        now = time.time()
        entries = ({k: v for k, v in known.items() if k not in launched}
                   | {run_id: {"reason": reason, "at": now} for run_id, reason in reasons.items()})
        if entries != known:
            atomic_write(path, json.dumps(entries, indent=1).encode())


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path`'s sidecar `.lock` file (waits for another holder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as sidecar:
        fcntl.flock(sidecar, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(sidecar, fcntl.LOCK_UN)


def with_backend_errors(states: list[TrialState], runs_dir: Path, spec: GridSpec) -> list[TrialState]:
    """Each trial that is not completed or running, has no reason of its own, and has a recorded backend error no
    older than its run's last status change, gets that error as its reason."""
    errors = read_errors(runs_dir, spec)
    return [dataclasses.replace(s, reason=errors[s.trial.run_id]["reason"])
            if s.state not in ("completed", "running") and not s.reason and s.trial.run_id in errors
            and _current(errors[s.trial.run_id], run_dir(runs_dir, s.trial.run_id)) else s for s in states]


def _current(entry: dict, run: Path) -> bool:
    try:
        changed = (run / "status.json").stat().st_mtime
    except OSError:
        return True  # the job never started: nothing ran it since
    return changed <= float(entry.get("at", 0))
