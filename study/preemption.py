"""Preemption: the signals that warn of a preemption or the time limit ask the run to stop at the next step boundary.

They are SIGUSR1 and SIGTERM (Slurm's `--signal=USR1@T`, `scontrol requeue`) and submitit's preemption signal,
read from submitit's environment as submitit reads it (`SUBMITIT_PREEMPT_SIGNAL`, default USR2, which submitit's
executor asks Slurm to send before the time limit). The run then writes a checkpoint of that step, exactly as a
periodic one (so the resumed run ends with the weights and metrics of one that never stopped), and leaves for
requeue: the handlers that were installed before it (submitit's, which checkpoints the job's callable and requeues
it; or the default, which ends the process) receive the signal again. A plain Slurm job warned by USR1 or USR2
without such a handler requeues itself with `scontrol requeue`; SIGTERM from `scontrol requeue` needs nothing more.
Ranks agree at log steps (one all-reduce), so every rank checkpoints the same step. Handlers install only in the
main thread; elsewhere (a thread-based executor) signals keep their default meaning.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from types import FrameType
from typing import NoReturn

import torch
import torch.distributed as dist

from study.errors import UserError

SUBMITIT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"  # submitit/core/job_environment.py: JobEnvironment.USR_SIG


def submitit_signal() -> signal.Signals:
    """submitit's preemption signal in this process: SIG + $SUBMITIT_PREEMPT_SIGNAL, USR2 when unset."""
    name = os.environ.get(SUBMITIT_SIGNAL_ENV, "USR2")
    try:
        return signal.Signals[f"SIG{name}"]
    except KeyError:
        raise UserError(f"{SUBMITIT_SIGNAL_ENV}={name!r} names no signal (submitit reads it as SIG + the name, "
                        "e.g. USR2)") from None


def preemption_signals() -> tuple[signal.Signals, ...]:
    """The signals that ask a run to checkpoint and leave for requeue."""
    return tuple(dict.fromkeys((signal.SIGUSR1, signal.SIGTERM, submitit_signal())))


class Preempted(Exception):
    """Raised out of the training loop after the preemption checkpoint; carries the signal to pass on."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step} (checkpoint written)")
        self.signum, self.step = signum, step


class Preemption:
    """While active, the preemption signals set `received` instead of acting; `pass_on` restores and re-sends."""

    def __init__(self):
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in preemption_signals()}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = self.received or signum

    def requested(self, world: int, device: torch.device, at_log_step: bool) -> int | None:
        """The signal to stop for, agreed by every rank (checked at log steps when there are several)."""
        if world == 1:
            return self.received
        if not at_log_step:
            return None
        flag = torch.tensor([self.received or 0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None


def pass_on(stopped: Preempted) -> NoReturn:
    """Leave for requeue: self-requeue a plain Slurm job warned by a user signal, then re-send the signal to the
    handler installed before training (submitit's checkpoints and requeues; the default ends the process). A handler
    that lets the process live on (submitit ignores SIGTERM: Slurm requeues the job itself; on ranks other than 0
    submitit's own handler returns) is followed by an exit with code 128 + the signal, so no caller takes the stopped
    run for a finished one."""
    print(f"{stopped}: leaving for requeue", file=sys.stderr, flush=True)  # before `scontrol requeue` ends us
    handler = signal.getsignal(stopped.signum)
    if stopped.signum != signal.SIGTERM and handler in (signal.SIG_DFL, signal.SIG_IGN) and \
            "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_PROCID", "0")) == 0:
        subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False, timeout=60)
    os.kill(os.getpid(), stopped.signum)
    raise SystemExit(128 + stopped.signum)
