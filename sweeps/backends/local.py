"""Local backend: trials in this process, or in a pool of `workers` spawned processes.

A pool's workers end with the launcher that spawned them: on Linux each asks the kernel for SIGTERM when its
parent dies, so a killed `sweep launch` (even by SIGKILL) stops its trials as a preemption does (checkpoint
at the next step boundary, then exit) instead of leaving them to train on unattended; the next launch
resumes them.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from sweeps.execute import TrialTask, execute_trial


@dataclass(frozen=True)
class LocalOptions:
    """Options of the local backend: trials at once."""

    workers: int = 1


PR_SET_PDEATHSIG = 1  # prctl(2)


def _end_with_launcher(launcher_pid: int) -> None:
    """Have the kernel send this worker SIGTERM when the launcher dies (Linux; elsewhere a no-op)."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != launcher_pid:  # the launcher died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def _init_worker(threads: int, launcher_pid: int) -> None:
    """Pool initializer: end with the launcher, and share the cores between workers instead of
    oversubscribing them."""
    import torch

    _end_with_launcher(launcher_pid)
    torch.set_num_threads(threads)


def launch(tasks: list[TrialTask], options: LocalOptions) -> list[dict]:
    """Run the tasks in worker processes on this machine, the cores split among them; their result records."""
    workers = min(options.workers, len(tasks))  # a wave of one trial (a pipeline's stage) keeps every core
    if workers <= 1:
        return [execute_trial(task) for task in tasks]
    threads = max(1, (os.cpu_count() or 1) // workers)
    records = []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads, os.getpid())) as pool:
        futures = {pool.submit(execute_trial, task): task for task in tasks}
        for future in as_completed(futures):
            try:
                records.append(future.result())
            except Exception as e:  # a worker process died: the run store shows the trial as interrupted
                records.append({"run_dir": futures[future].run_dir, "outcome": "error", "reason": repr(e)})
    return records
