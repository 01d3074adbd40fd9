"""Local backend: trials in this process, or in a pool of `workers` spawned processes."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from sweeps.execute import TrialTask, execute_trial


@dataclass(frozen=True)
class LocalOptions:
    workers: int = 1


def _limit_threads(threads: int) -> None:
    """Pool initializer: share the cores between workers instead of oversubscribing them."""
    import torch

    torch.set_num_threads(threads)


def launch(tasks: list[TrialTask], options: LocalOptions) -> list[dict]:
    workers = min(options.workers, len(tasks))  # a wave of one trial (a pipeline's stage) keeps every core
    if workers <= 1:
        return [execute_trial(task) for task in tasks]
    threads = max(1, (os.cpu_count() or 1) // workers)
    records = []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_limit_threads, initargs=(threads,)) as pool:
        futures = {pool.submit(execute_trial, task): task for task in tasks}
        for future in as_completed(futures):
            try:
                records.append(future.result())
            except Exception as e:  # a worker process died: the run store shows the trial as interrupted
                records.append({"run_dir": futures[future].run_dir, "outcome": "error", "reason": repr(e)})
    return records
