"""The Ray Tune backend on a real local Ray instance: a grid completes, relaunch skips, a trial whose
worker dies is retried and resumes from its checkpoint; a search runs its segments as Ray tasks."""

import os

import pytest

from study.runstore import RunStore
from sweeps.execute import FAULT_FILE
from sweeps.search import run_search
from tests.grid_specs import attempts, launch_argv, run_dirs, tune_reports, write_grid_spec
from tests.search_options import options
from unihetero.cli import main

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_grid_completes_on_ray_and_relaunch_skips(tmp_path, ray_instance):
    grid, runs = write_grid_spec(tmp_path), tmp_path / "runs"
    assert main(launch_argv(grid, runs, "--backend", "ray", "--max-concurrent", "2")) == 0
    dirs = run_dirs(grid, runs)
    assert [RunStore(d).status()["state"] for d in dirs] == ["completed"] * 3
    assert main(launch_argv(grid, runs, "--backend", "ray")) == 0
    assert [len(attempts(d)) for d in dirs] == [1, 1, 1]


@pytest.mark.ray
@pytest.mark.slow
def test_trial_whose_worker_dies_is_retried_and_resumes(tmp_path, ray_instance):
    grid = write_grid_spec(tmp_path, "seeds: [0]\n", **{"train.samples_seen": 320})
    runs = tmp_path / "runs"
    (run,) = run_dirs(grid, runs)
    run.mkdir(parents=True)
    (run / FAULT_FILE).write_text("10")  # the first attempt's process exits right after step 10
    assert main(launch_argv(grid, runs, "--backend", "ray", "--max-failures", "2")) == 0
    assert RunStore(run).status()["state"] == "completed"
    first, second = attempts(run)
    assert (first["from_step"], second["from_step"]) == (0, 10)
    assert first["pid"] != second["pid"] and not (run / FAULT_FILE).exists()


@pytest.mark.ray
@pytest.mark.slow
def test_search_runs_its_segments_as_ray_tasks(tmp_path, ray_instance):
    study = run_search(options(tmp_path, trials=2, pruner="none", backend="ray"))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for t in study.trials:
        segments = attempts(tmp_path / "runs" / t.user_attrs["run_id"])
        assert [s["from_step"] for s in segments] == [0, 5]  # two segments: to the eval at 5, then to the end
        assert all(s["pid"] != os.getpid() for s in segments)


@pytest.mark.ray
@pytest.mark.slow
def test_trial_of_two_ranks_trains_one_run_with_ddp(tmp_path, ray_instance):
    from sweeps.backends.raytune import RayOptions, launch
    from sweeps.execute import TrialTask
    from sweeps.spec import expand, load_spec

    grid = write_grid_spec(tmp_path, "seeds: [0]\n", **{"train.samples_seen": 96, "train.threads": 1})
    (trial,) = expand(load_spec(str(grid), "smoke"))
    run = tmp_path / "runs" / trial.run_id
    (record,) = launch([TrialTask(str(run), trial.config.to_dict())], RayOptions(cpus_per_trial=2, ranks_per_trial=2))
    assert record["outcome"] == "ran" and record["state"] == "completed", record
    assert RunStore(run).status()["world_size"] == 2
    assert len(attempts(run)) == 1  # rank 0 alone owns the trial and writes its files
    reported = [r["eval/step"] for r in tune_reports(tmp_path / "runs") if "eval/step" in r]  # as they were written
    assert reported == [e["step"] for e in RunStore(run).records("eval.jsonl")] and len(reported) >= 2


@pytest.mark.ray
@pytest.mark.slow
def test_a_trial_out_of_retries_shows_rays_error_beside_it(tmp_path, ray_instance, capsys):
    grid = write_grid_spec(tmp_path, "seeds: [0]\n", **{"train.samples_seen": 320})
    runs = tmp_path / "runs"
    (run,) = run_dirs(grid, runs)
    run.mkdir(parents=True)
    (run / FAULT_FILE).write_text("10")  # its worker process exits right after step 10, and Ray may not retry it
    assert main(launch_argv(grid, runs, "--backend", "ray", "--max-failures", "0")) == 1
    (row,) = [line for line in capsys.readouterr().out.splitlines() if run.name in line]
    assert "interrupted" in row and "ray backend: " in row and "Error" in row, row
    assert main(["sweep", "status", str(grid), "--preset", "smoke", "--runs-dir", str(runs)]) == 0
    (later,) = [line for line in capsys.readouterr().out.splitlines() if run.name in line]
    assert later == row  # a later `sweep status` still shows Ray's reason
    assert main(launch_argv(grid, runs, "--backend", "ray")) == 0  # a relaunch resumes it
    assert [a["from_step"] for a in attempts(run)] == [0, 10]
