"""A trial on Ray Train workers (`sweep launch --backend ray --workers-per-trial N`): inside its Tune trial, a
`TorchTrainer` of N workers that Ray places wherever the cluster has room, across nodes. Ray Train makes the
workers one env:// process group (MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK, as torchrun sets them), and
every worker runs the trial as a torchrun or Slurm rank does (`sweeps.execute.execute_on_ranks`): rank 0 holds
the trial's lock and writes the run, the others follow. The run directory stays the truth: checkpoints and
records are written there, not to Ray's storage.

A worker that dies (its node lost) makes Ray Train restart the group, up to `max_failures` times; the new rank 0
takes over the dead attempt's lock (the same owner tag) and the run resumes from its last checkpoint. When Ray Train
gives up, the trial ends with an error record (the run left resumable for a relaunch) rather than raising: Tune's own
retries are for the Tune trial's process, so a trial whose workers keep dying trains 1 + `max_failures` times, not
(1 + `max_failures`) squared. The Tune trial around it reports each evaluation as the run writes it
(sweeps.backends.raytune).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from sweeps.execute import TrialTask, execute_on_ranks


def _worker_loop(config: dict) -> None:
    """One Ray Train worker: its rank of the trial; rank 0 then hands its record, with the node of every rank, to
    the Tune trial through `config["records"]` (a Ray queue)."""
    import ray
    import ray.train
    import torch.distributed as dist

    record = execute_on_ranks(TrialTask(**config["task"]), owner_tag=config["tag"])
    nodes = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    if dist.get_rank() == 0:
        config["records"].put({**{k: v for k, v in record.items() if v is not None}, "worker_nodes": nodes})
    ray.train.report({})


def scaling(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> object:
    """Ray Train's ScalingConfig for `workers` workers of these resources each (GPUs: each worker's own device)."""
    from ray.train import ScalingConfig

    return ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                         resources_per_worker={"CPU": cpus_per_worker, "GPU": gpus_per_worker})


def run_on_workers(task: TrialTask, tag: str, workers: int, cpus_per_worker: float, gpus_per_worker: float,
                   max_failures: int, storage: Path) -> dict:
    """Run `task` on `workers` Ray Train workers from inside a Tune trial; rank 0's record, with the worker nodes."""
    from ray.train import FailureConfig, RunConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    records = Queue(actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        _worker_loop, train_loop_config={"task": dataclasses.asdict(task), "tag": tag, "records": records},
        scaling_config=scaling(workers, cpus_per_worker, gpus_per_worker),
        run_config=RunConfig(name=f"{Path(task.run_dir).name}-{time.strftime('%Y%m%d-%H%M%S')}",
                             storage_path=str(storage), failure_config=FailureConfig(max_failures=max_failures)))
    try:
        trainer.fit()
    except TrainingFailedError as error:  # raised once its restarts are spent
        return {"run_dir": task.run_dir, "outcome": "error",
                "reason": f"Ray Train stopped after {max_failures} restart(s): {error!r}"}
    return records.get_nowait_batch(records.qsize())[-1]  # the last attempt's: it finished the trial
