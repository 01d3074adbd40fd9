"""Pipelines of grids: the shipped `regime` pipeline (an encoder stage, then VLMs on it, frozen) on the local
backend; upstream ids inside dependent ids; a failed upstream leaves its dependents pending with the reason;
the same two-stage pipeline on Ray and on Slurm (there with job dependencies)."""

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

from study.runstore import RunStore
from sweeps.execute import NAN_FAULT_FILE
from sweeps.spec import load_spec, pipeline, waves
from tests.grid_specs import write_pipeline
from tests.slurm_helpers import require_slurm
from unihetero.cli import main


def final_state(run: Path) -> dict:
    return torch.load(RunStore(run).checkpoints()[-1], map_location="cpu", weights_only=True)["model"]


@pytest.mark.slow
def test_regime_pipeline_runs_locally_with_a_frozen_pretrained_encoder(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["reproduce", "regime", "--preset", "smoke", "--runs-dir", str(runs), "--out", str(tmp_path / "r"),
                 "--bootstrap", "0", "--no-figures"]) == 0
    trials = pipeline(load_spec("regime", "smoke"))
    stage, vlm = waves(trials)
    assert {t.config.objective.task for t in stage} == {"contrastive", "self_distill"}
    for t in vlm:
        (up,) = t.upstream
        assert t.config.model.encoder_checkpoint == f"run:{up}" and t.config.model.freeze_encoder
        encoder = {k: v for k, v in final_state(runs / up).items() if k.startswith("encoder.")}
        trained = final_state(runs / t.run_id)
        assert encoder and all(torch.equal(trained[k], v) for k, v in encoder.items()), t.axes
        assert RunStore(runs / t.run_id).status()["state"] == "completed"
    probes = RunStore(runs / stage[0].run_id).records("eval.jsonl")
    assert probes[0]["step"] == 0 and "probe_acc/shape" in probes[0] and "probe_acc/shape" in probes[-1]
    members = json.loads((runs / "grids" / "regime__smoke.json").read_text())["trials"]
    assert [m.get("stage") for m in members[:2]] == ["encoder_pretrain"] * 2 and "upstream" in members[2]
    capsys.readouterr()
    assert main(["sweep", "plan", "regime", "--preset", "smoke"]) == 0
    assert "upstream" in capsys.readouterr().out.splitlines()[1]


def test_upstream_run_id_is_part_of_the_dependent_run_id(tmp_path):
    first = pipeline(load_spec(str(write_pipeline(tmp_path)), "smoke"))
    other = pipeline(load_spec(str(write_pipeline(tmp_path, "{train.lr: 0.001}")), "smoke"))
    assert first[0].run_id != other[0].run_id
    assert first[1].upstream == [first[0].run_id] and other[1].upstream == [other[0].run_id]
    assert {t.run_id for t in first[1:]}.isdisjoint(t.run_id for t in other[1:])


def test_a_failed_upstream_leaves_its_dependents_pending_with_the_reason(tmp_path, capsys):
    grid, runs = write_pipeline(tmp_path), tmp_path / "runs"
    up = pipeline(load_spec(str(grid), "smoke"))[0]
    (runs / up.run_id).mkdir(parents=True)
    (runs / up.run_id / NAN_FAULT_FILE).write_text("2")
    argv = ["sweep", "launch", str(grid), "--preset", "smoke", "--runs-dir", str(runs)]
    assert main(argv) == 1
    assert RunStore(runs / up.run_id).status()["state"] == "failed"
    capsys.readouterr()
    assert main(["sweep", "status", str(grid), "--preset", "smoke", "--runs-dir", str(runs)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "pending" in line and "upstream" in line]
    assert len(lines) == 2 and all(f"upstream run {up.run_id} failed: non-finite loss at step 2" in x for x in lines)


@pytest.mark.ray
@pytest.mark.slow
def test_two_stage_pipeline_completes_on_ray(tmp_path):
    pytest.importorskip("ray")
    import ray

    grid, runs = write_pipeline(tmp_path), tmp_path / "runs"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        argv = ["sweep", "launch", str(grid), "--preset", "smoke", "--runs-dir", str(runs), "--backend", "ray"]
        assert main(argv) == 0
    finally:
        ray.shutdown()
    trials = pipeline(load_spec(str(grid), "smoke"))
    assert [RunStore(runs / t.run_id).status()["state"] for t in trials] == ["completed"] * 3


@pytest.mark.slurm
@pytest.mark.slow
def test_two_stage_pipeline_on_slurm_chains_jobs_by_dependency(tmp_path):
    require_slurm()
    grid, runs = write_pipeline(tmp_path), tmp_path / "runs"
    argv = ["sweep", "launch", str(grid), "--preset", "smoke", "--runs-dir", str(runs), "--backend", "slurm",
            "--partition", "debug", "--mem-gb", "1", "--time-min", "5", "--no-wait"]
    assert main(argv) == 0
    queue = subprocess.run(["squeue", "-h", "-r", "-o", "%i %E"], capture_output=True, text=True, check=True).stdout
    dependent = [line for line in queue.splitlines() if "afterok:" in line]
    assert len(dependent) == 2, queue  # both stage-1 jobs wait on the stage-0 job
    trials = pipeline(load_spec(str(grid), "smoke"))
    deadline = time.monotonic() + 240
    states = []
    while time.monotonic() < deadline:
        states = [RunStore(runs / t.run_id).status()["state"] if (runs / t.run_id / "status.json").exists()
                  else "missing" for t in trials]
        if states == ["completed"] * 3:
            break
        time.sleep(2)
    assert states == ["completed"] * 3
    first_started = RunStore(runs / trials[0].run_id).records("sweep_attempts.jsonl")[0]["at"]
    assert all(RunStore(runs / t.run_id).records("sweep_attempts.jsonl")[0]["at"] >= first_started
               for t in trials[1:])
