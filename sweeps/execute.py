"""The one function every backend runs per trial: lock, skip or run `study.train.train`, release.

It returns a small record read back from the run store (the truth), never from the training call.
Each execution that trains appends a line to `sweep_attempts.jsonl` in the run directory (host, pid,
the step it started from), so a resumed trial shows it resumed and a duplicate run would show twice.

Fault injection for reliability tests: a file `.fault_exit_after_step` holding N in a run directory
makes the next execution of that trial stop its process with os._exit right after the checkpoint of
step N (as a kill would); the file is consumed, so the retry runs normally. It works on every
backend, since it travels with the run directory. Likewise `.fault_nan_at_step` holding N makes the loss
of step N NaN in the next execution (as a diverging run would), so the trial fails with step and reason.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from study.config import RunConfig, from_dict
from study.errors import UserError
from study.runstore import RunStore
from sweeps.lock import TrialLock

ATTEMPTS = "sweep_attempts.jsonl"
FAULT_FILE = ".fault_exit_after_step"
NAN_FAULT_FILE = ".fault_nan_at_step"
FAULT_EXIT_CODE = 17


@dataclass(frozen=True)
class TrialTask:
    """Everything a worker needs to execute one trial (plain data: pickles to any backend)."""

    run_dir: str
    config: dict
    retry_failed: bool = False
    runner: str = "train"  # "train", or "noop" for measuring dispatch overhead
    until_step: int | None = None  # stop after the checkpoint of this step (search segments)
    lock_timeout_s: float = 60.0


def _train(cfg: RunConfig, run_dir: Path, until_step: int | None) -> None:
    from study.train import Interrupt, train

    nan_at = _consume(run_dir / NAN_FAULT_FILE)
    step = _consume(run_dir / FAULT_FILE)
    if step is not None:
        train(cfg, run_dir, interrupt=Interrupt(after_step=step), quiet=True, nan_at_step=nan_at)
        if RunStore(run_dir).status()["state"] != "completed":
            os._exit(FAULT_EXIT_CODE)
        return
    train(cfg, run_dir, interrupt=Interrupt(after_step=until_step) if until_step else None, quiet=True,
          nan_at_step=nan_at)


def _consume(fault: Path) -> int | None:
    """The step in a fault-injection file, which is removed (so a retry runs normally); None without one."""
    if not fault.exists():
        return None
    step = int(fault.read_text())
    fault.unlink()
    return step


def _noop(cfg: RunConfig, run_dir: Path, until_step: int | None) -> None:
    RunStore(run_dir).write_status("completed", step=0, total_steps=0, noop=True)


RUNNERS: dict[str, Callable[[RunConfig, Path, int | None], None]] = {"train": _train, "noop": _noop}


def _record(store: RunStore, outcome: str, seconds: float = 0.0, **extra: object) -> dict:
    status = store.status()
    record = {"run_id": store.path.name, "run_dir": str(store.path), "outcome": outcome,
              "state": status["state"], "step": status.get("step"), "seconds": seconds}
    if "reason" in status:
        record["reason"] = status["reason"]
    record.update(extra)
    return record


def execute_trial(task: TrialTask, owner_tag: str | None = None) -> dict:
    """Run one trial exactly once: skip it if another process holds it, if it is completed, or if it
    failed (unless `retry_failed`); otherwise train (creating or resuming the run).

    Outcomes: ran, locked (someone else runs it), done (completed before), failed-before, error
    (the run directory is unusable; nothing written).
    """
    store = RunStore(task.run_dir)
    with TrialLock(store.path, timeout_s=task.lock_timeout_s, tag=owner_tag) as held:
        if not held:
            return _record(store, "locked")
        cfg = from_dict(task.config)
        try:
            store.init(cfg)
        except UserError as e:
            return {"run_id": store.path.name, "run_dir": str(store.path), "outcome": "error",
                    "state": "unknown", "reason": str(e), "seconds": 0.0}
        state = store.status()
        if state["state"] == "completed":
            return _record(store, "done")
        if state["state"] == "failed" and not task.retry_failed:
            return _record(store, "failed-before")
        store.append(ATTEMPTS, {"at": time.time(), "host": socket.gethostname(), "pid": os.getpid(),
                                "tag": owner_tag, "from_state": state["state"],
                                "from_step": state.get("step", 0)})
        start = time.perf_counter()
        try:
            RUNNERS[task.runner](cfg, store.path, task.until_step)
        except Exception as e:  # any crash of one trial is recorded; the sweep goes on
            if store.status()["state"] != "failed":  # TrainingFailed already wrote its reason
                last = traceback.format_exception_only(e)[-1].strip()
                store.write_status("failed", reason=f"crashed: {last}")
        return _record(store, "ran", time.perf_counter() - start)
