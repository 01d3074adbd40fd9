"""A rough estimate of a grid's time left, from the runs of it that completed here in one attempt, and the run order
a launch takes from the same prices (each seed's longest trial first).

A completed run that trained from step 0 to its end in a single attempt (`sweep_attempts.jsonl`) gives its wall
seconds per step, evaluations included; a resumed run is left out, since its wall time spans its downtime, and so is
a run recorded as another's copy. Each unfinished trial's steps to go are priced at the median of its own cell (the
trial's axes but the seed) or, with none there, of the whole grid; a trial that trains exactly as another run
(`sweeps.dedupe`) costs nothing, since a launch copies that run's records. The answer is worker time: on W workers in
parallel it is about 1/W of it. A run paused part way (SIGSTOP) counts its pause: the medians keep a few such runs
from moving the estimate much.

A launch runs seed-major, and within a seed the trial with the most time to go first (`longest_first`): on a pool
of workers, a wave that ended on its longest trial would leave the other workers idle until it finished.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from study.runstore import RunStore, read_jsonl
from sweeps.dedupe import representatives
from sweeps.execute import ATTEMPTS
from sweeps.layout import run_dir
from sweeps.spec import Trial
from sweeps.status import UNFINISHED, TrialState, collect


def cell(trial: Trial) -> str:
    """A trial's grid cell: its axes but the seed, as one key."""
    return json.dumps({k: v for k, v in trial.axes.items() if k != "seed"}, sort_keys=True, default=str)


def seconds_per_step(path: Path) -> float | None:
    """Wall seconds per step of a run that completed in one attempt from step 0 (None for any other run)."""
    attempts = read_jsonl(path / ATTEMPTS)
    status = RunStore(path).status() if (path / "status.json").exists() else {}
    if status.get("state") != "completed" or len(attempts) != 1 or attempts[0].get("from_step", 0) != 0:
        return None
    steps = status.get("total_steps") or 0
    wall = float(status.get("updated_at", 0)) - float(attempts[0].get("at", 0))
    return wall / steps if steps > 0 and wall > 0 else None


@dataclass(frozen=True)
class Estimate:
    """Worker seconds the unfinished trials of a grid need, and what the prices come from."""

    seconds: float  # worker seconds the unfinished trials need
    steps: int  # their steps to go
    trials: int  # how many are unfinished
    measured: int  # completed one-attempt runs the prices come from
    median: float  # their median wall seconds per step


def estimate(states: list[TrialState], runs_dir: Path) -> Estimate | None:
    """The worker time the grid's unfinished trials need (None when some must train and no measured run prices
    them)."""
    copies = representatives([s.trial for s in states], runs_dir)  # they train nothing: a launch copies records
    todo = [s for s in states if s.state in UNFINISHED and s.trial.run_id not in copies]
    rates = cell_rates([s.trial for s in states if s.state == "completed"], runs_dir)
    measured = [r for group in rates.values() for r in group]
    if not measured:
        return Estimate(0.0, 0, 0, 0, float("nan")) if not todo else None
    overall = statistics.median(measured)
    seconds = sum(_steps_to_go(s) * statistics.median(rates.get(cell(s.trial), [overall])) for s in todo)
    return Estimate(seconds, sum(_steps_to_go(s) for s in todo), len(todo), len(measured), overall)


def cell_rates(trials: list[Trial], runs_dir: Path) -> dict[str, list[float]]:
    """Each cell's wall seconds per step over the runs of `trials` that completed here in one attempt."""
    rates: dict[str, list[float]] = {}
    for t in trials:
        if (rate := seconds_per_step(run_dir(runs_dir, t.run_id))) is not None:
            rates.setdefault(cell(t), []).append(rate)
    return rates


def longest_first(trials: list[Trial], runs_dir: Path) -> list[Trial]:
    """Run order: seed-major (every cell's first seed before any cell's second, so that a grid stopped part way has
    complete seeds to pair), and within a seed the trial with the most time to go first: its steps to go at its
    cell's median wall seconds per step measured here, else at the median over all measured runs, else counted in
    steps. A wave then ends on its shortest trials instead of a long one training alone while other workers idle
    (list scheduling, longest first); the order changes no run's result."""
    rates = cell_rates(trials, runs_dir)
    measured = [r for group in rates.values() for r in group]
    overall = statistics.median(measured) if measured else 1.0
    to_go = {s.trial.run_id: _steps_to_go(s) * statistics.median(rates.get(cell(s.trial), [overall]))
             for s in collect(trials, runs_dir)}
    return sorted(trials, key=lambda t: (t.axes.get("seed", 0), -to_go[t.run_id]))


def _steps_to_go(state: TrialState) -> int:
    return max((state.total_steps or state.trial.config.steps) - (state.step or 0), 0)


def time_left_line(states: list[TrialState], runs_dir: Path) -> str:
    """One line: the worker time the unfinished trials need, and what the estimate rests on."""
    e = estimate(states, runs_dir)
    if e is None:
        return "time left: no estimate yet (no run of this grid has completed here in one attempt)"
    if not e.trials:
        return "time left: none (no trial to train; a launch copies the records of runs that trained alike)" if any(
            s.state in UNFINISHED for s in states) else "time left: none (no trial to run)"
    return (f"time left: about {_amount(e.seconds)} for {e.trials} unfinished trial(s), {e.steps:,} steps (about 1/W "
            f"of that on W workers in parallel; each cell's median wall seconds per step over {e.measured} run(s) of "
            f"this grid that completed here in one attempt, {e.median:.2f} s overall)")


def to_cap_line(states: list[TrialState], runs_dir: Path, cap: int) -> str:
    """One line: the worker time left if every open comparison of an `--until-decided` grid ran to the seed cap
    (`states`: the trials it would then run), priced as `time_left_line` prices them."""
    e = estimate(states, runs_dir)
    if e is None or not e.trials:
        return f"to the cap of {cap} seeds per arm: {'nothing more' if e else 'no estimate yet'}"
    return (f"to the cap of {cap} seeds per arm: at most about {_amount(e.seconds)} for {e.trials} unfinished "
            "trial(s), if every comparison still open stays open to its cap")


def _amount(seconds: float) -> str:
    return f"{seconds / 3600:.1f} worker-hours" if seconds >= 3600 else f"{seconds / 60:.0f} worker-minutes"
