"""The Slurm (Submitit) backend on the local Slurm cluster, and the torch.distributed environment."""

import re
import shutil
import subprocess
import time

import pytest

from study.runstore import RunStore
from study.train import train
from sweeps.backends.slurm import SlurmOptions, _executor, distributed_env, first_host, launch, sized_resources
from sweeps.execute import TrialTask
from sweeps.spec import expand, load_spec
from tests.conftest import deterministic
from tests.grid_specs import attempts, cli_process, launch_argv, run_dirs, write_grid_spec
from tests.slurm_helpers import SLURM_ARGS, job_state, require_slurm
from unihetero.cli import main


@pytest.mark.parametrize(("nodelist", "host"), [
    ("node7", "node7"), ("gpu[03-05,9],cpu1", "gpu03"), ("a1,b2", "a1"), ("rack[2-3]-ib", "rack2-ib"),
])
def test_first_host_of_a_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_distributed_env_from_slurm_variables():
    env = distributed_env({"SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_PROCID": "5",
                           "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"})
    assert env == {"MASTER_ADDR": "gpu07", "MASTER_PORT": str(20000 + 123456 % 20000), "RANK": "5",
                   "WORLD_SIZE": "8", "LOCAL_RANK": "1"}
    assert distributed_env({})["WORLD_SIZE"] == "1"


@pytest.mark.parametrize(("time_min", "warning"), [(1, "USR2@15"), (2, "USR2@30"), (5, "USR2@75"), (60, "USR2@90")])
def test_the_time_limit_warning_comes_before_the_limit_but_never_at_the_start(tmp_path, time_min, warning):
    executor = _executor(SlurmOptions(time_min=time_min), tmp_path)
    script = executor._executor._make_submission_file_text("true", "0")
    assert f"#SBATCH --signal={warning}\n" in script and f"#SBATCH --time={time_min}\n" in script


def test_slurm_resources_are_sized_from_data_workers_unless_given():
    import argparse

    from unihetero.commands.sweep import backend_options

    spec = load_spec("generation_target", "smoke")
    args = {"backend": "slurm", "partition": None, "account": None, "qos": None, "time_min": 5, "gpus_per_node": 0,
            "nodes": 1, "tasks_per_node": 2, "array_parallelism": 4, "no_wait": True}
    trials = [t.config for t in expand(spec)]
    trials[0].data.workers = 3  # the most demanding trial
    assert sized_resources(trials, None, None, tasks_per_node=2) == (4, 32.0)  # 1 + 3 workers, 4 GB per CPU
    assert sized_resources(trials, 2, None) == (2, 8.0)
    assert sized_resources(trials, None, 6.0) == (4, 6.0)
    assert sized_resources(trials, None, 0.0) == (4, None)  # the partition's default
    sized = backend_options(argparse.Namespace(**args, cpus_per_task=None, mem_gb=None), spec)
    assert (sized.cpus_per_task, sized.mem_gb) == (1, 8.0)  # no data workers: one CPU per task, two tasks
    given = backend_options(argparse.Namespace(**args, cpus_per_task=3, mem_gb=2.0), spec)
    assert (given.cpus_per_task, given.mem_gb) == (3, 2.0)


@pytest.mark.slurm
@pytest.mark.slow
def test_grid_completes_on_slurm(tmp_path):
    require_slurm()
    grid, runs = write_grid_spec(tmp_path), tmp_path / "runs"
    assert main(launch_argv(grid, runs, *SLURM_ARGS)) == 0
    dirs = run_dirs(grid, runs)
    assert [RunStore(d).status()["state"] for d in dirs] == ["completed"] * 3
    assert all(RunStore(d).status()["backend_job_id"].startswith("slurm:") for d in dirs)
    assert main(launch_argv(grid, runs)) == 0  # relaunch (here locally) skips what Slurm completed
    assert [len(attempts(d)) for d in dirs] == [1, 1, 1]


@pytest.mark.slurm
@pytest.mark.slow
def test_requeued_job_resumes_and_matches_an_uninterrupted_run(tmp_path):
    partition = require_slurm()
    # long enough that the job cannot finish within Slurm's KillWait grace after the requeue's SIGTERM
    grid = write_grid_spec(tmp_path, "seeds: [0]\n", **{"train.samples_seen": 4800})
    (trial,) = expand(load_spec(str(grid), "smoke"))
    run = tmp_path / "runs" / trial.run_id
    (record,) = launch([TrialTask(str(run), trial.config.to_dict())],
                       SlurmOptions(partition=partition, mem_gb=2, time_min=5, wait=False))
    deadline = time.monotonic() + 400
    while RunStore(run).status().get("step", 0) < 10 or not RunStore(run).checkpoints():
        assert time.monotonic() < deadline, "the job did not reach its first checkpoint"
        time.sleep(0.05)
    subprocess.run(["scontrol", "requeue", record["job_id"]], check=True, timeout=30)
    reference = train(trial.config, tmp_path / "reference", quiet=True)  # meanwhile: ~20 s until the restart
    while RunStore(run).status()["state"] != "completed":
        assert time.monotonic() < deadline, f"the requeued job did not finish: {RunStore(run).status()}"
        time.sleep(0.5)

    first, second = attempts(run)
    errors = "".join(p.read_text() for p in (run.parent / ".slurm").rglob("*_log.err"))
    (stopped,) = [int(s) for s in re.findall(r"stopped by SIGTERM at step (\d+) \(checkpoint written\)", errors)]
    # scontrol requeue sends SIGTERM: a checkpoint of the step it stopped, and the next start resumes there
    assert first["from_step"] == 0 and second["from_step"] == stopped >= 10, (first, second, errors[-2000:])
    assert first["tag"] == second["tag"] == f"slurm:{RunStore(run).status()['backend_job_id'][6:]}"
    assert RunStore(run).records("eval.jsonl") == RunStore(reference).records("eval.jsonl")
    assert deterministic(RunStore(run).records("metrics.jsonl")) == \
        deterministic(RunStore(reference).records("metrics.jsonl"))


@pytest.mark.slurm
@pytest.mark.slow
def test_job_of_two_tasks_trains_one_run_with_ddp(tmp_path):
    partition = require_slurm()
    grid = write_grid_spec(tmp_path, "seeds: [0]\n", **{"train.samples_seen": 96, "train.threads": 1})
    (trial,) = expand(load_spec(str(grid), "smoke"))
    run = tmp_path / "runs" / trial.run_id
    (record,) = launch([TrialTask(str(run), trial.config.to_dict())],
                       SlurmOptions(partition=partition, mem_gb=2, time_min=5, tasks_per_node=2))
    assert record["outcome"] == "ran" and record["state"] == "completed", record
    status = RunStore(run).status()
    assert status["world_size"] == 2 and status["backend_job_id"] == f"slurm:{record['job_id']}"
    assert len(attempts(run)) == 1  # task 0 alone owns the trial and writes its files
    assert [m["step"] for m in RunStore(run).records("metrics.jsonl")][-1] == trial.config.steps
    assert [e["step"] for e in RunStore(run).records("eval.jsonl")] == [0, trial.config.steps]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_node_that_cannot_see_the_runs_directory_is_named_in_the_trial_reason(tmp_path, capsys):
    """The node gets the job but cannot open its log (the job folder is gone there, as on a node without the runs
    directory's file system): Slurm fails the launch (JobLaunchFailure), and the launch's table says so per trial
    instead of a bare "pending"."""
    partition = require_slurm()
    grid, runs = write_grid_spec(tmp_path, "seeds: [0, 1]\n"), tmp_path / "runs"
    blocker = subprocess.run(["sbatch", "--parsable", "-p", partition, "--exclusive", "-o", "/dev/null", "--wrap",
                              "sleep 120"], capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    try:
        deadline = time.monotonic() + 30
        while job_state(blocker) != "RUNNING":  # it holds the node before the grid's jobs are submitted
            assert time.monotonic() < deadline, f"the blocking job did not start: {job_state(blocker)}"
            time.sleep(0.2)
        proc = cli_process(launch_argv(grid, runs, *SLURM_ARGS))
        deadline = time.monotonic() + 60
        while len(list((runs / ".slurm").glob("*/*/*.pkl"))) < 2:  # both jobs submitted, held behind the blocker
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.2)
        for folder in (runs / ".slurm").iterdir():
            shutil.rmtree(folder)
    finally:
        subprocess.run(["scancel", blocker], check=True, timeout=30)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, out
    assert "0/2 completed, 0 running, 0 interrupted, 0 failed, 2 pending" in out
    for run in run_dirs(grid, runs):
        (row,) = [line for line in out.splitlines() if run.name in line]
        assert "pending" in row and "slurm backend: job " in row and "JobLaunchFailure" in row, out
        assert f"could not write the job's log in {runs / '.slurm'}" in row, out
        assert "the runs directory must be on a file system every compute node shares" in row, out
        assert not run.exists() or not (run / "status.json").exists()
    assert main(["sweep", "status", str(grid), "--preset", "smoke", "--runs-dir", str(runs)]) == 0
    status = capsys.readouterr().out
    for run in run_dirs(grid, runs):  # a later status still says why
        (row,) = [line for line in status.splitlines() if run.name in line]
        assert "pending" in row and "JobLaunchFailure" in row, status
