"""Faults on the local Slurm cluster: two launches of one grid at the same time run every trial exactly once,
and a job timed out twice (Slurm's time-limit signal, USR2, sent early: submitit checkpoints the trial and
requeues the job) is requeued twice, resumes each time from its checkpoint and ends exactly as an
uninterrupted run.

(A `scontrol requeue` from outside, the preemption case, is tests/test_sweep_slurm.py; it is not repeated
here because submitit ignores the SIGTERM that comes with it and a tiny run may finish in Slurm's grace.)"""

from __future__ import annotations

import pickle
import re
import subprocess
import time
from pathlib import Path

import pytest

from study.runstore import RunStore
from study.train import train
from sweeps.backends.slurm import SlurmOptions, launch
from sweeps.execute import TrialTask
from sweeps.spec import expand, load_spec
from tests.grid_specs import attempts, cli_process, launch_argv, run_dirs, write_grid_spec
from tests.reliability.conftest import assert_same_run
from tests.slurm_helpers import SLURM_ARGS, require_slurm

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_two_slurm_launches_at_once_run_each_trial_exactly_once(tmp_path):
    require_slurm()
    grid = write_grid_spec(tmp_path, "seeds: [0, 1]\n", **{"train.samples_seen": 160})
    runs = tmp_path / "runs"
    # both arrays are submitted together and all four jobs start at once: each trial is raced by two jobs
    procs = [cli_process(launch_argv(grid, runs, *SLURM_ARGS)) for _ in range(2)]
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    assert all(p.returncode in (0, 1) for p in procs), outputs  # 1: its job found a trial held by the other
    for run in run_dirs(grid, runs):
        assert RunStore(run).status()["state"] == "completed"
        (attempt,) = attempts(run)  # exactly once
        assert attempt["from_step"] == 0 and attempt["tag"].startswith("slurm:")
    # each trial had a job in both arrays: one trained it, the other found it held (or done) and left it
    outcomes = [pickle.loads(p.read_bytes())[1]["outcome"] for p in (runs / ".slurm").rglob("*_result.pkl")]
    assert sorted(outcomes).count("ran") == 2 and len(outcomes) == 4, outcomes
    assert set(outcomes) <= {"ran", "locked", "done"}, outcomes


def _wait(run: Path, until, what: str, deadline: float) -> None:
    while not until(RunStore(run)):
        assert time.monotonic() < deadline, f"{what}: {RunStore(run).status()} attempts {attempts(run)}"
        time.sleep(0.05)


def test_slurm_job_timed_out_twice_is_requeued_and_ends_as_an_uninterrupted_run(tmp_path):
    partition = require_slurm()
    grid = write_grid_spec(tmp_path, "seeds: [0]\n", **{"train.samples_seen": 1280})  # 80 steps, checkpoints every 10
    (trial,) = expand(load_spec(str(grid), "smoke"))
    run = tmp_path / "runs" / trial.run_id
    (record,) = launch([TrialTask(str(run), trial.config.to_dict())],
                       SlurmOptions(partition=partition, mem_gb=2, time_min=5, wait=False))
    job = record["job_id"]
    deadline = time.monotonic() + 300

    def past(step: int, tries: int):
        return lambda s: len(s.records("sweep_attempts.jsonl")) == tries and s.status().get("step", 0) >= step \
            and s.status()["state"] == "running"

    _wait(run, past(10, 1), "the job did not reach its first checkpoint", deadline)
    # the time-limit signal: submitit's handler checkpoints the trial, requeues the job and exits
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    reference = train(trial.config, tmp_path / "reference", quiet=True)  # meanwhile, the uninterrupted run
    _wait(run, past(20, 2), "the job did not restart after the first time-out", deadline)
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    _wait(run, lambda s: s.status()["state"] == "completed", "the job did not finish after the second time-out",
          deadline)

    tries = attempts(run)
    assert len(tries) == 3 and tries[0]["from_step"] == 0, tries
    assert len({t["tag"] for t in tries}) == 1  # one Slurm job, requeued
    log = "".join(p.read_text() for p in (run.parent / ".slurm").rglob("*_log.out"))
    assert "(2 remaining timeouts)" in log and "(1 remaining timeouts)" in log, log  # submitit counted both
    errors = "".join(p.read_text() for p in sorted((run.parent / ".slurm").rglob("*_log.err")))
    stops = [int(s) for s in re.findall(r"stopped by SIGUSR2 at step (\d+) \(checkpoint written\)", errors)]
    # each start resumed at exactly the step its predecessor's signal stopped (a preemption checkpoint there)
    assert [t["from_step"] for t in tries[1:]] == stops, (tries, errors[-3000:])
    assert_same_run(reference, run)
