"""The one function every backend runs per trial: lock, skip or run `study.train.train`, release.

It returns a small record read back from the run store (the truth), never from the training call.
Each execution that trains appends a line to `sweep_attempts.jsonl` in the run directory (host, pid,
the step it started from), so a resumed trial shows it resumed and a duplicate run would show twice.

A trial of several ranks whose collective fails because another rank is gone (its process or node died) is not
failed: the exception propagates with the run left as it was, and the launcher (Ray Train's restart of its
workers, a Slurm requeue, a relaunch) resumes it from its last checkpoint.

Fault injection for reliability tests: a file `.fault_exit_after_step` holding N in a run directory
makes the next execution of that trial stop its process with os._exit right after the checkpoint of
step N (as a kill would); the file is consumed, so the retry runs normally. It works on every
backend, since it travels with the run directory. Likewise `.fault_nan_at_step` holding N makes the loss
of step N NaN in the next execution (as a diverging run would), so the trial fails with step and reason.

A trial of several processes (`execute_on_ranks`: the tasks of a Slurm job, the workers of a Ray
trial) runs `execute_trial` on rank 0, which holds the lock, decides and writes the run files, and
`follow_trial` on the others, which train beside it with the arguments rank 0 shares (or do nothing
when it does not train).
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist

from study.config import RunConfig, from_dict
from study.distributed import backend, peer_lost
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
    upstream: tuple[str, ...] = ()  # run directories this trial takes as inputs (they completed before it starts)


Share = Callable[[Any], Any]  # rank 0 passes a value to every rank of the trial; all get rank 0's value back


def alone(value: Any) -> Any:
    """The Share of a trial of one process."""
    return value


@dataclass(frozen=True)
class TrainArgs:
    """How every rank of a trial calls `train`; decided on rank 0, where the fault files are consumed."""

    stop_after: int | None  # stop after the checkpoint of this step
    nan_at_step: int | None
    exit_if_stopped: bool  # fault injection: the process dies if the run stopped before completing


def run_training(cfg: RunConfig, run_dir: Path, args: TrainArgs) -> None:
    """Train one run in this process (faults injected as the task asks); with `exit_if_stopped` a run that stopped
    before completing ends the process at once, as a killed worker would."""
    from study.loop import Faults, inject
    from study.train import train

    with inject(Faults(nan_at_step=args.nan_at_step)):
        train(cfg, run_dir, until_step=args.stop_after, quiet=True)
    if args.exit_if_stopped and RunStore(run_dir).status()["state"] != "completed":
        os._exit(FAULT_EXIT_CODE)


def _train(cfg: RunConfig, run_dir: Path, until_step: int | None, share: Share) -> None:
    nan_at = _consume(run_dir / NAN_FAULT_FILE)
    fault_step = _consume(run_dir / FAULT_FILE)
    args = TrainArgs(fault_step or until_step, nan_at, fault_step is not None)
    run_training(cfg, run_dir, share(args))


def _consume(fault: Path) -> int | None:
    """The step in a fault-injection file, which is removed (so a retry runs normally); None without one."""
    if not fault.exists():
        return None
    step = int(fault.read_text())
    fault.unlink()
    return step


def _noop(cfg: RunConfig, run_dir: Path, until_step: int | None, share: Share) -> None:
    RunStore(run_dir).write_status("completed", step=0, total_steps=0, noop=True)


RUNNERS: dict[str, Callable[[RunConfig, Path, int | None, Share], None]] = {"train": _train, "noop": _noop}


def _record(store: RunStore, outcome: str, seconds: float = 0.0, **extra: object) -> dict:
    status = store.status()
    record = {"run_id": store.path.name, "run_dir": str(store.path), "outcome": outcome,
              "state": status["state"], "step": status.get("step"), "seconds": seconds}
    if "reason" in status:
        record["reason"] = status["reason"]
    record.update(extra)
    return record


def execute_trial(task: TrialTask, owner_tag: str | None = None, share: Share = alone) -> dict:
    """Run one trial exactly once: skip it if another process holds it, if it is completed, or if it
    failed (unless `retry_failed`); otherwise train (creating or resuming the run). On rank 0 of a
    multi-process trial, `share` hands the training arguments to the other ranks.

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
            RUNNERS[task.runner](cfg, store.path, task.until_step, share)
        except Exception as e:  # any crash of one trial is recorded; the sweep goes on
            if peer_lost(e):  # another rank of the trial is gone: the run is intact, its launcher restarts it
                raise
            if store.status()["state"] != "failed":  # TrainingFailed already wrote its reason
                last = traceback.format_exception_only(e)[-1].strip()
                store.write_status("failed", reason=f"crashed: {last}")
        return _record(store, "ran", time.perf_counter() - start)


def follow_trial(task: TrialTask, share: Share) -> dict:
    """A rank other than 0 of a multi-process trial: train beside rank 0 when it does, with its arguments."""
    args = share(None)
    if args is not None:
        run_training(from_dict(task.config), Path(task.run_dir), args)
    return {"run_id": Path(task.run_dir).name, "run_dir": task.run_dir, "outcome": "ran" if args else "idle"}


def execute_on_ranks(task: TrialTask, owner_tag: str | None = None) -> dict:
    """Execute a trial on every process of an env:// group (RANK, WORLD_SIZE, MASTER_ADDR/PORT): rank 0
    executes it and returns its record; the others follow it. One process: plain `execute_trial`. The group is
    made here unless the launcher made it already (Ray Train's workers), and then it is left to the launcher."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return execute_trial(task, owner_tag=owner_tag)
    made_here = not dist.is_initialized()
    if made_here:
        dist.init_process_group(backend(), init_method="env://")
    try:
        if dist.get_rank() == 0:
            return _lead(task, owner_tag)
        return follow_trial(task, share=_broadcast) | {"rank": dist.get_rank()}
    finally:
        if made_here:
            dist.destroy_process_group()


def _broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _lead(task: TrialTask, owner_tag: str | None) -> dict:
    """Rank 0: execute the trial, sharing its training arguments; None to the others when it does not train."""
    shared: list[Any] = []

    def share(value: Any) -> Any:
        shared.append(value)
        return _broadcast(value)

    try:
        return execute_trial(task, owner_tag=owner_tag, share=share)
    finally:
        if not shared:  # locked, done, failed before, or unusable: nothing for the followers to do
            _broadcast(None)
