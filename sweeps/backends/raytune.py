"""Ray Tune backend: one Tune trial per grid trial, on a local Ray instance or a cluster.

While a trial trains, each evaluation its run writes to `eval.jsonl` is reported to Tune (`eval/...`) as it is
written, so a Tune scheduler can act on the evaluations; the trial's record follows at the end.

Each launch is a fresh Tune experiment: the run directories, not Tune's own state, make a relaunch
skip completed trials and resume partial ones, so Tuner.restore adds nothing. A trial whose worker
dies (or that raises) is retried up to `max_failures` times; the retry takes over the dead attempt's
lock (same owner tag) and resumes the run from its last checkpoint.

A trial on one node may ask for several GPUs (`gpus_per_trial`) and CPUs (`cpus_per_trial`); it then trains
with `ranks_per_trial` processes (default: one per GPU), started torchrun-style on the trial's node as one
env:// group (rank 0 owns the trial, the others follow; see sweeps.execute.execute_on_ranks). A trial of
`workers_per_trial` workers instead runs them as Ray Train workers placed across the cluster's nodes, each
asking for `cpus_per_worker` and `gpus_per_worker` (sweeps.backends.ray_train); its Tune trial itself asks for
nothing, so the workers have the cluster to themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from study.runstore import RunStore
from sweeps.backends.ray_connect import check_runs_dir, join
from sweeps.execute import TrialTask, execute_on_ranks, execute_trial

POLL_S = 1.0  # how often a Tune trial looks for new evaluations of its run


@dataclass(frozen=True)
class RayOptions:
    """Options of the Ray backend: the cluster, resources per trial and Tune's storage."""

    address: str | None = None  # HOST:PORT of a running cluster; None starts a local instance
    connect_timeout_s: float = 30.0  # joining `address` fails with one line after this long
    max_concurrent: int | None = None
    max_failures: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    ranks_per_trial: int = 0  # training processes per trial (0: one per GPU of gpus_per_trial, at least one)
    workers_per_trial: int = 0  # > 0: the trial runs on this many Ray Train workers, across nodes
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    num_cpus: int | None = None  # size of a local instance (None: all cores)
    storage: str = ""  # Tune's experiment folder (default: RUNS_DIR/.ray)
    name: str = "sweep"


def ranks_per_trial(options: RayOptions) -> int:
    """How many ranks (processes) train each trial."""
    return options.workers_per_trial or options.ranks_per_trial or max(1, int(options.gpus_per_trial))


def trial_resources(options: RayOptions) -> object:
    """What a Tune trial asks for: its ranks' resources; when its ranks are Ray Train workers, one byte of memory
    (Tune needs a request that is not empty), so that the workers have every CPU and GPU."""
    from ray import tune

    if options.workers_per_trial:
        return tune.PlacementGroupFactory([{"memory": 1}])
    return {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}


def report_evaluations(run_dir: Path, done: threading.Event, report: Callable[[dict], None]) -> None:
    """Hand each evaluation record the run writes to `report` (Tune's) once, in order, as it appears, until `done`
    (the records written before `done` included)."""
    sent = 0
    while True:
        finished = done.is_set()
        records = RunStore(run_dir).records("eval.jsonl")
        for record in records[sent:]:
            report({f"eval/{k}": v for k, v in record.items() if isinstance(v, int | float)})
        sent = max(sent, len(records))
        if finished:
            return
        done.wait(POLL_S)


def _trainable(config: dict) -> None:
    """One Tune trial: the trial on this process, on ranks of this node, or on Ray Train workers; while it trains,
    each evaluation the run writes is reported to Tune, and its record at the end."""
    from ray import tune

    tag = f"ray:{tune.get_context().get_experiment_name()}/{tune.get_context().get_trial_id()}"
    task, ranks, workers = TrialTask(**config["task"]), config["ranks"], config["workers"]
    done = threading.Event()
    reporter = threading.Thread(target=report_evaluations, args=(Path(task.run_dir), done, tune.report), daemon=True)
    reporter.start()
    try:
        if workers:
            from sweeps.backends.ray_train import run_on_workers

            record = run_on_workers(task, tag, workers["n"], workers["cpus"], workers["gpus"],
                                    workers["max_failures"], Path(workers["storage"]))
        elif ranks == 1:
            record = execute_trial(task, owner_tag=tag)
        else:
            record = _on_local_ranks(task, tag, ranks)
    finally:
        done.set()
        reporter.join()
    tune.report({k: v for k, v in record.items() if v is not None})


def _on_local_ranks(task: TrialTask, tag: str, ranks: int) -> dict:
    """The trial on `ranks` spawned processes of this node, one env:// group (as torchrun); rank 0's record."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ProcessPoolExecutor(ranks, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_rank, task, tag, rank, ranks, port) for rank in range(ranks)]
        return [f.result() for f in futures][0]


def _rank(task: TrialTask, tag: str, rank: int, world: int, port: int) -> dict:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    return execute_on_ranks(task, owner_tag=tag)


def connect(options: RayOptions) -> bool:
    """Join or start Ray unless it is already initialised; True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    if options.address:
        join(options.address, options.connect_timeout_s)
    else:
        ray.init(address="local", num_cpus=options.num_cpus, include_dashboard=False, log_to_driver=False)
    return True


@contextlib.contextmanager
def session(options: RayOptions) -> Iterator[None]:
    """Ray joined (or started) for the block, and shut down after it if this block started it; joining a
    cluster that is absent or refuses this process fails here, before a grid writes anything."""
    import ray

    started = connect(options)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def check_shared(runs_dir: Path, options: RayOptions) -> None:
    """Inside the session: every node of the cluster sees the runs directory (`ray_connect.check_runs_dir`)."""
    check_runs_dir(runs_dir)


def launch(tasks: list[TrialTask], options: RayOptions) -> list[dict]:
    """Run the tasks as Ray Tune trials on the cluster the options name; their result records."""
    from ray import tune

    if not tasks:
        return []
    with session(options):
        storage = Path(options.storage or Path(tasks[0].run_dir).parent / ".ray").resolve()
        workers = {"n": options.workers_per_trial, "cpus": options.cpus_per_worker, "gpus": options.gpus_per_worker,
                   "max_failures": options.max_failures, "storage": str(storage)} if options.workers_per_trial else None
        tuner = tune.Tuner(
            tune.with_resources(_trainable, trial_resources(options)),
            param_space={"task": tune.grid_search([dataclasses.asdict(t) for t in tasks]),
                         "ranks": ranks_per_trial(options), "workers": workers},
            tune_config=tune.TuneConfig(max_concurrent_trials=options.max_concurrent, reuse_actors=True,
                                        trial_dirname_creator=lambda trial: trial.trial_id),
            run_config=tune.RunConfig(name=f"{options.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                                      storage_path=str(storage), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=options.max_failures)),
        )
        results = tuner.fit()
    return [r.metrics if r.error is None else
            {"run_dir": ((r.config or {}).get("task") or {}).get("run_dir", ""), "outcome": "error",
             "reason": repr(r.error)} for r in results]
