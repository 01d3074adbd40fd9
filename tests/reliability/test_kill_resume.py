"""Kill -9 a training run at many points (mid-step, mid-checkpoint, mid-eval, mid-record) and resume:
the final weights and metrics equal those of an uninterrupted run, exactly."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from study.checkpoint import load_latest
from study.runstore import RunStore
from tests.conftest import deterministic

ROOT = Path(__file__).parents[2]
OVERRIDES = ["objective.target=semantic_input+pixel", "masking.distribution=truncnorm", "train.samples_seen=480",
             "train.checkpoint_every=5", "eval.every=10", "eval.num_images=4", "eval.probe_images=20",
             "eval.inference_scaling=false"]
KILLS = ["step:3", "checkpoint:10", "metrics:15", "eval:20", "step:22", "checkpoint:25"]


def _drive(run_dir: Path, spec: str, overrides: list[str] = OVERRIDES) -> int:
    cmd = [sys.executable, "-m", "tests.reliability.kill_driver", str(run_dir), spec, *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=600).returncode


@pytest.mark.slow
def test_kill_nine_at_many_points_then_resume_equals_uninterrupted(tmp_path):
    reference, victim = tmp_path / "reference", tmp_path / "victim"
    assert _drive(reference, "none") == 0
    for spec in KILLS:
        assert _drive(victim, spec) == -9, spec  # it really died at that point
        assert RunStore(victim).status()["state"] != "completed"
    assert _drive(victim, "none") == 0
    a, b = RunStore(reference), RunStore(victim)
    wa, wb = load_latest(a)["model"], load_latest(b)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert deterministic(a.records("metrics.jsonl")) == deterministic(b.records("metrics.jsonl"))
    assert a.records("eval.jsonl") == b.records("eval.jsonl")
    assert b.status()["state"] == "completed"


@pytest.mark.slow
def test_corrupt_newest_checkpoint_and_status_fall_back_with_a_warning(tmp_path):
    from study.train import train
    from tests.conftest import tiny_config

    cfg = tiny_config(*OVERRIDES)
    reference = train(cfg, tmp_path / "reference", quiet=True)
    run = tmp_path / "run"
    train(cfg, run, until_step=15, quiet=True)
    newest = RunStore(run).checkpoints()[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    (run / "status.json").write_bytes(b"\x00\xff garbage")
    with pytest.warns(UserWarning) as warned:
        train(cfg, run, quiet=True)
    messages = [str(w.message) for w in warned]
    assert any(newest.name in m for m in messages)  # the truncated checkpoint: the one before it is loaded
    assert any("unreadable status file, treated as unknown" in m for m in messages)  # the garbage status file
    a, b = RunStore(reference), RunStore(run)
    wa, wb = load_latest(a)["model"], load_latest(b)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert deterministic(a.records("metrics.jsonl")) == deterministic(b.records("metrics.jsonl"))
    assert b.status()["state"] == "completed"
    assert not list(run.glob("checkpoints/.*.tmp"))
