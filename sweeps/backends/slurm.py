"""Slurm backend: a Submitit job array, one checkpointable job per trial.

On timeout or preemption submitit calls `SlurmTrial.checkpoint`, which resubmits the same trial; the
requeued job (same Slurm job id, so it may take over its own earlier lock) calls `train` again, which
resumes from the run's last checkpoint. A plain `scontrol requeue` restarts the job from its original
pickle, which resumes the same way. The job state comes from squeue (sacct may be unavailable).

A job of several tasks (nodes x tasks_per_node, one task per GPU) trains its trial with DDP or FSDP:
every task joins one process group, rendezvous from Slurm's variables (`distributed_env`); task 0
holds the trial lock, decides whether to train and writes the run files; the others follow it.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import submitit

from study.config import RunConfig
from sweeps.execute import TrialTask, execute_on_ranks

FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}


@dataclass(frozen=True)
class SlurmOptions:
    """Options of the Slurm backend: submitit's job resources and requeue limits."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 60
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    nodes: int = 1
    tasks_per_node: int = 1
    mem_gb: float | None = None
    array_parallelism: int = 64
    max_num_timeout: int = 3  # requeues after a timeout before the job counts as failed
    folder: str = ""  # submitit logs and pickles (default: RUNS_DIR/.slurm/<name>)
    name: str = "sweep"
    wait: bool = True


MEM_GB_PER_CPU = 4.0  # the default memory request per CPU of a task (a rank: its process and data workers)
WARNING_S = 90  # the time-limit warning (USR2: checkpoint and requeue) comes this long before the limit ...
WARNING_SHARE = 0.25  # ... or this share of a short limit before it, so it never lands as the job starts


def warning_delay_s(time_min: int) -> int:
    """Seconds before the time limit that Slurm sends USR2: 90, or a quarter of a limit under 6 minutes
    (Slurm may send it up to a minute early, so a fixed 90 s would stop a 2-minute job as it starts)."""
    return int(min(WARNING_S, WARNING_SHARE * 60 * time_min))


def sized_resources(trials: list[RunConfig], cpus_per_task: int | None, mem_gb: float | None,
                    tasks_per_node: int = 1) -> tuple[int, float | None]:
    """CPUs per task and memory per node: by default one CPU for the rank and one per data worker of the grid's
    most demanding trial, MEM_GB_PER_CPU for each CPU of the node's tasks; given values win, and mem_gb 0 requests
    none (the partition's default)."""
    cpus = cpus_per_task or 1 + max((t.data.workers for t in trials), default=0)
    if mem_gb is None:
        return cpus, MEM_GB_PER_CPU * cpus * tasks_per_node
    return cpus, mem_gb or None


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: 'gpu[03-05,9],cpu1' -> 'gpu03'."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?([^,\[]*)", nodelist.strip())
    if m is None:
        raise ValueError(f"unparseable Slurm node list {nodelist!r}")
    prefix, ranges, suffix = m.groups()
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "") + suffix


def distributed_env(environ: Mapping[str, str]) -> dict[str, str]:
    """torch.distributed's environment (MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK) from Slurm's."""
    job = int(environ.get("SLURM_JOB_ID", "0"))  # one per array element, so elements on a node differ
    nodelist = environ.get("SLURM_JOB_NODELIST", environ.get("SLURM_NODELIST", "localhost"))
    return {"MASTER_ADDR": first_host(nodelist),
            "MASTER_PORT": environ.get("MASTER_PORT", str(20000 + job % 20000)),
            "RANK": environ.get("SLURM_PROCID", "0"),
            "WORLD_SIZE": environ.get("SLURM_NTASKS", "1"),
            "LOCAL_RANK": environ.get("SLURM_LOCALID", "0")}


class SlurmTrial(submitit.helpers.Checkpointable):
    """The job body; `checkpoint` (inherited) resubmits the same trial when Slurm stops the job."""

    def __call__(self, task: TrialTask) -> dict:
        os.environ.update(distributed_env(os.environ))
        return execute_on_ranks(task, owner_tag=f"slurm:{os.environ.get('SLURM_JOB_ID', '')}")


def _executor(options: SlurmOptions, folder: Path, after: tuple[str, ...] = ()) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm",
                                     slurm_max_num_timeout=options.max_num_timeout)
    params = {"name": options.name, "timeout_min": options.time_min,
              "slurm_signal_delay_s": warning_delay_s(options.time_min), "cpus_per_task": options.cpus_per_task,
              "nodes": options.nodes, "tasks_per_node": options.tasks_per_node,
              "slurm_array_parallelism": options.array_parallelism}
    optional = {"gpus_per_node": options.gpus_per_node or None, "mem_gb": options.mem_gb,
                "slurm_partition": options.partition, "slurm_account": options.account,
                "slurm_qos": options.qos}
    if after:  # start only once these jobs completed; cancelled by Slurm if one of them fails
        optional["slurm_additional_parameters"] = {"dependency": "afterok:" + ":".join(after),
                                                   "kill_on_invalid_dep": "yes"}
    executor.update_parameters(**params, **{k: v for k, v in optional.items() if v is not None})
    return executor


def queue_states() -> dict[str, str] | None:
    """Slurm state of every job squeue knows (array elements expanded), by job id; None if squeue fails."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return dict(line.split(maxsplit=1) for line in out.splitlines() if " " in line)


def job_condition(job_id: str) -> tuple[str, str, str]:
    """Slurm's state, reason and node list of one job (squeue); empty strings once squeue no longer knows it."""
    try:
        out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T|%r|%N"], capture_output=True,
                             text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "", "", ""
    state, reason, nodes = (out.splitlines()[0].split("|") + ["", ""])[:3] if out else ("", "", "")
    return state, reason, nodes


def ended_before_starting(job: submitit.Job) -> str:
    """Why a job wrote not even its log: cancelled while pending (a failed dependency, scancel), or started on a
    node that cannot see the folder of its log, the runs directory (the job fails to launch)."""
    state, reason, nodes = job_condition(job.job_id)
    slurm = ", ".join(x for x in (state or "no longer in squeue", reason if reason != "None" else "") if x)
    why = f"job {job.job_id} ended before its trial started (Slurm: {slurm})"
    if state in ("FAILED", "NODE_FAIL", "BOOT_FAIL") and nodes:
        why += (f": node {nodes} could not write the job's log in {job.paths.folder.parent} (it does not see that "
                "folder); the runs directory must be on a file system every compute node shares")
    return why


def _finished(job: submitit.Job, states: dict[str, str]) -> bool:
    return job.paths.result_pickle.exists() or states.get(job.job_id, "GONE") in FINAL_STATES | {"GONE"}


def _result(job: submitit.Job, task: TrialTask) -> dict:
    if not job.paths.result_pickle.exists():
        reason = (f"job {job.job_id} ended without a result (see its log {job.paths.stdout})"
                  if job.paths.stdout.exists() else ended_before_starting(job))
        return {"run_dir": task.run_dir, "job_id": job.job_id, "outcome": "error", "reason": reason}
    try:
        return job.task(0).result() | {"job_id": job.job_id}  # task 0 holds the trial
    except Exception as e:  # the job raised: its error is in the job's log
        return {"run_dir": task.run_dir, "job_id": job.job_id, "outcome": "error", "reason": str(e)[-500:]}


def launch(tasks: list[TrialTask], options: SlurmOptions, poll_s: float = 2.0) -> list[dict]:
    """Submit one array job; with `wait`, block until every job has finished (requeues included)."""
    return launch_waves([tasks], options, poll_s)


def _submit_wave(tasks: list[TrialTask], options: SlurmOptions, folder: Path,
                 job_of: dict[str, str]) -> list[submitit.Job]:
    """One array job per set of upstream runs, each depending (afterok) on the jobs of those runs; a trial
    whose upstream runs completed before this launch needs no dependency."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, task in enumerate(tasks):
        groups.setdefault(tuple(job_of[u] for u in task.upstream if u in job_of), []).append(i)
    jobs: list[submitit.Job | None] = [None] * len(tasks)
    for after, members in groups.items():
        array = _executor(options, folder, after).map_array(SlurmTrial(), [tasks[i] for i in members])
        for i, job in zip(members, array, strict=True):
            jobs[i] = job
    return jobs


def launch_waves(waves: list[list[TrialTask]], options: SlurmOptions, poll_s: float = 2.0) -> list[dict]:
    """Submit every wave at once, each trial's job depending on its upstream trials' jobs (Slurm job
    dependencies: nothing polls on the submitting node for them); with `wait`, block until every job has
    finished (requeues included). A dependent of a failed job is cancelled by Slurm and stays pending in the
    run store."""
    tasks = [t for wave in waves for t in wave]
    if not tasks:
        return []
    folder = Path(options.folder or Path(tasks[0].run_dir).parent / ".slurm" / options.name).resolve()
    job_of: dict[str, str] = {}
    jobs: list[submitit.Job] = []
    for wave in waves:
        submitted = _submit_wave(wave, options, folder, job_of)
        job_of.update({task.run_dir: job.job_id for task, job in zip(wave, submitted, strict=True)})
        jobs += submitted
    if not options.wait:
        return [{"run_dir": t.run_dir, "job_id": j.job_id, "outcome": "submitted"}
                for j, t in zip(jobs, tasks, strict=True)]
    pending = list(jobs)
    while pending:
        time.sleep(poll_s)
        states = queue_states()
        if states is not None:
            pending = [j for j in pending if not _finished(j, states)]
    return [_result(j, t) for j, t in zip(jobs, tasks, strict=True)]
