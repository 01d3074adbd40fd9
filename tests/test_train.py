import json

import pytest
import torch

import study.vlm as vlm
from study.checkpoint import load_latest
from study.runstore import RunStore
from study.train import TrainingFailed, train
from tests.conftest import deterministic, tiny_config


def _final_weights(run_dir):
    return load_latest(RunStore(run_dir))["model"]


@pytest.mark.slow
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    cfg = tiny_config("objective.target=semantic_input+pixel", "masking.distribution=truncnorm",
                      "train.samples_seen=480", "eval.every=10", "eval.inference_scaling=false")
    whole = train(cfg, tmp_path / "whole", quiet=True)
    part = tmp_path / "part"
    train(cfg, part, until_step=20, quiet=True)
    assert RunStore(part).status()["state"] == "running"
    # work done after the checkpoint and then lost: a stray record that the resume must drop
    RunStore(part).append("metrics.jsonl", {"step": 25, "loss/total": 123.0})
    train(cfg, part, quiet=True)
    a, b = _final_weights(whole), _final_weights(part)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for name in ("metrics.jsonl", "eval.jsonl"):
        ra, rb = RunStore(whole).records(name), RunStore(part).records(name)
        if name == "eval.jsonl":
            assert ra == rb
        else:
            assert deterministic(ra) == deterministic(rb)
    assert RunStore(part).status()["state"] == "completed"


def test_completed_run_is_not_rerun(tmp_path):
    cfg = tiny_config("train.samples_seen=64", "eval.inference_scaling=false")
    run = train(cfg, tmp_path / "r", quiet=True)
    before = (run / "metrics.jsonl").read_text()
    train(cfg, run, quiet=True)
    assert (run / "metrics.jsonl").read_text() == before


def test_nan_loss_fails_the_run_with_step_and_reason(tmp_path, monkeypatch):
    cfg = tiny_config("train.samples_seen=320", "eval.inference_scaling=false")
    real = vlm.loss_terms
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 7:  # fault injection: the 7th step's caption loss becomes NaN
            losses["caption"] = losses["caption"] * float("nan")
            losses["total"] = losses["caption"]
        return losses

    monkeypatch.setattr(vlm, "loss_terms", poisoned)
    with pytest.raises(TrainingFailed, match="step 7"):
        train(cfg, tmp_path / "nan", quiet=True)
    status = json.loads((tmp_path / "nan" / "status.json").read_text())
    assert status["state"] == "failed" and status["step"] == 7
    assert "non-finite loss" in status["reason"] and "caption=nan" in status["reason"]


def test_metrics_and_eval_records_are_complete(tmp_path):
    cfg = tiny_config("objective.target=pixel", "train.samples_seen=160", "eval.every=5")
    run = train(cfg, tmp_path / "r", quiet=True)
    store = RunStore(run)
    metrics = store.records("metrics.jsonl")
    assert [m["step"] for m in metrics] == [5, 10]
    assert metrics[-1]["flops"] > metrics[0]["flops"] > 0 and metrics[-1]["samples_per_s"] > 0
    evals = store.records("eval.jsonl")
    assert [e["step"] for e in evals] == [0, 5, 10] and evals[-1]["final"]
    for key in ("caption_loss", "zs_acc", "chance", "probe_acc/shape", "pix/psnr", "pix_mean_target/psnr"):
        assert key in evals[-1]
    scaling = json.loads((run / "inference_scaling.json").read_text())
    assert [r["views"] for r in scaling["views"]] == [1, 2]
    assert [r["diffusion_steps"] for r in scaling["diffusion_steps"]] == [2, 4]
    assert (run / "samples.npz").exists()
    assert [p.name for p in store.checkpoints()] == ["step_00000010.pt"]
