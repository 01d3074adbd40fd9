"""Local backend: trials in this process, or in `workers` spawned worker processes, each running one trial at a time.

Each worker has its own pipe to the launcher, and no worker depends on another: one that dies (killed for memory,
or by a fault the task injects) ends its trial alone, interrupted with the process's exit code as its reason; the
other workers train on, a new worker takes the dead one's place for the trials still waiting, and the next launch
resumes the interrupted trial. (A `concurrent.futures` process pool would not do: one dead worker breaks the pool,
which terminates every other worker and fails every trial still waiting.)

Workers end with the launcher that spawned them: on Linux each asks the kernel for SIGTERM when its parent dies, so a
killed `sweep launch` (even by SIGKILL) stops its trials as a preemption does (checkpoint at the next step boundary,
then exit) instead of leaving them to train on unattended; the next launch resumes them.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from sweeps.execute import TrialTask, execute_trial


@dataclass(frozen=True)
class LocalOptions:
    """Options of the local backend: trials at once."""

    workers: int = 1


PR_SET_PDEATHSIG = 1  # prctl(2)


def _end_with_launcher(launcher_pid: int) -> None:
    """Have the kernel send this process SIGTERM when the launcher dies (Linux; elsewhere a no-op)."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != launcher_pid:  # the launcher died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def _serve(launcher: Connection, threads: int, launcher_pid: int) -> None:
    """A worker process: end with the launcher, take its share of the cores, then execute each trial the launcher
    sends and send back its record, until it sends None."""
    import torch

    _end_with_launcher(launcher_pid)
    torch.set_num_threads(threads)
    while (task := launcher.recv()) is not None:
        try:
            record = execute_trial(task)
        except Exception as e:  # e.g. a lost peer: the run store keeps the truth; the launcher is told why
            record = {"run_dir": task.run_dir, "outcome": "error", "reason": repr(e)}
        launcher.send(record)


class _Worker:
    """One spawned worker process and the launcher's end of its pipe."""

    def __init__(self, threads: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs, threads, os.getpid()))
        self.process.start()
        theirs.close()  # the worker holds the only other end: its death reads as end of file here
        self.task: TrialTask | None = None

    def start(self, task: TrialTask) -> None:
        self.task = task
        self.pipe.send(task)

    def result(self) -> dict:
        """The record of the trial it was given, or, if the process died first, an error record naming its exit
        code."""
        task, self.task = self.task, None
        try:
            return self.pipe.recv()
        except EOFError:
            self.process.join()
            code = self.process.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            return {"run_dir": task.run_dir, "outcome": "error",
                    "reason": f"its trial process died ({how}) before returning a result"}

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self) -> None:
        if self.alive:
            with contextlib.suppress(OSError):  # it may die in between: the join below still reaps it
                self.pipe.send(None)
        self.process.join()
        self.pipe.close()


def launch(tasks: list[TrialTask], options: LocalOptions) -> list[dict]:
    """Run the tasks on this machine, in `workers` processes with the cores split among them; their result records,
    in the order they finished."""
    count = min(options.workers, len(tasks))  # a wave of one trial (a pipeline's stage) keeps every core
    if count <= 1:
        return [execute_trial(task) for task in tasks]
    threads = max(1, (os.cpu_count() or 1) // count)
    workers = [_Worker(threads) for _ in range(count)]
    waiting, records = list(tasks), []
    try:
        while waiting or any(w.task is not None for w in workers):
            for slot, worker in enumerate(workers):
                if waiting and worker.task is None:
                    if not worker.alive:  # it died with its last trial: a new one takes its place
                        worker.stop()
                        workers[slot] = worker = _Worker(threads)
                    worker.start(waiting.pop(0))
            busy = {w.pipe: w for w in workers if w.task is not None}
            for ready in wait(list(busy)):
                records.append(busy[ready].result())
    finally:
        for worker in workers:
            worker.stop()
    return records
