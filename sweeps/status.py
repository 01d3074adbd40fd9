"""A grid's state, read from the run store and the trial locks: counts, a table, a live progress line.

States: completed, failed, running (status running and its lock alive), interrupted (status running
or pending with a checkpoint but nobody holds it: a relaunch resumes it), pending.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from study.runstore import RunStore
from sweeps.layout import run_dir
from sweeps.lock import holder
from sweeps.spec import Trial

STATES = ("completed", "running", "interrupted", "failed", "pending")
UNFINISHED = ("running", "interrupted", "pending")  # the states a launch would still run


@dataclass(frozen=True)
class TrialState:
    """A trial's state in its runs directory, with its progress and why it is not running."""

    trial: Trial
    state: str
    step: int | None = None
    total_steps: int | None = None
    reason: str = ""


def trial_run_state(path: Path) -> str:
    """The run store's state of one run directory ('missing' before it exists)."""
    return RunStore(path).status()["state"] if (path / "status.json").exists() else "missing"


def _waiting_for(trial: Trial, runs_dir: Path) -> str:
    """Why a pending trial has not started: its upstream runs that have not completed."""
    reasons = []
    for up in trial.upstream:
        path = run_dir(runs_dir, up)
        state = trial_run_state(path)
        if state == "failed":
            why = RunStore(path).status().get("reason", "")
            reasons.append(f"upstream run {up} failed" + (f": {why}" if why else ""))
        elif state != "completed":
            reasons.append(f"waits for upstream run {up} ({'not started' if state == 'missing' else state})")
    return "; ".join(reasons)


def trial_state(trial: Trial, runs_dir: Path) -> TrialState:
    """One trial's state, step and reason, read from its run directory and lock."""
    path = run_dir(runs_dir, trial.run_id)
    if not (path / "status.json").exists():
        return TrialState(trial, "pending", reason=_waiting_for(trial, runs_dir))
    status = RunStore(path).status()
    state = status["state"]
    if state in ("running", "pending", "unknown"):
        live = holder(path) is not None
        started = state == "running" or bool(RunStore(path).checkpoints())
        state = "running" if live else ("interrupted" if started else "pending")
    return TrialState(trial, state, status.get("step"), status.get("total_steps"), status.get("reason", ""))


def collect(trials: list[Trial], runs_dir: Path) -> list[TrialState]:
    """Each trial's state in the runs directory."""
    return [trial_state(t, runs_dir) for t in trials]


def counts(states: list[TrialState]) -> dict[str, int]:
    """How many trials are in each state, every state named."""
    c = Counter(s.state for s in states)
    return {name: c.get(name, 0) for name in STATES}


def counts_line(states: list[TrialState]) -> str:
    """The counts in one line ('3/8 completed, 1 running, ...')."""
    c = counts(states)
    return f"{c['completed']}/{len(states)} completed, " + ", ".join(f"{c[k]} {k}" for k in STATES[1:])


def format_table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table of left-aligned columns under a header and a rule."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def status_table(states: list[TrialState]) -> str:
    """The grid's table: each trial's axes, run id, state, step and reason."""
    axis_keys = table_axes([s.trial for s in states])
    staged = any(s.trial.stage or s.trial.upstream for s in states)
    header = ["#", *(["stage"] if staged else []), *axis_keys, "run_id", "state", "step", "reason"]
    rows = []
    for s in states:
        step = f"{s.step}/{s.total_steps}" if s.total_steps else ""
        rows.append([str(s.trial.index), *([s.trial.stage or "-"] if staged else []),
                     *(axis_text(s.trial, k) for k in axis_keys), s.trial.run_id, s.state, step, s.reason])
    return format_table(rows, header)


def table_axes(trials: list[Trial]) -> list[str]:
    """The axis columns of a trial table (stage references are shown by the upstream column instead)."""
    return [k for k in dict.fromkeys(k for t in trials for k in t.axes)
            if not any(isinstance(t.axes.get(k), dict) for t in trials)]


def axis_text(trial: Trial, key: str) -> str:
    """A trial's value of one axis as the table shows it ('' when it has none)."""
    return str(trial.axes.get(key, ""))


class GridProgress:
    """A background thread that shows the grid's counts (from the run store) while a backend works."""

    def __init__(self, trials: list[Trial], runs_dir: Path, every_s: float = 2.0,
                 stream: TextIO | None = None):
        self.trials, self.runs_dir, self.every_s = trials, runs_dir, every_s
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="grid progress", daemon=True)
        self._last = ""

    def _show(self, final: bool = False) -> None:
        line = counts_line(collect(self.trials, self.runs_dir))
        if self.tty:
            print(f"\r{line}   ", end="\n" if final else "", file=self.stream, flush=True)
        elif line != self._last:
            print(line, file=self.stream, flush=True)
        self._last = line

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._show()

    def __enter__(self) -> GridProgress:
        self._show()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._show(final=True)
