"""Encoder-pretraining stages: each objective learns (held-out loss falls, probes recorded beside the random-init
floor), an interrupted stage resumes to exactly the uninterrupted weights, and its encoder loads into a VLM."""

import pytest
import torch

from study.data.world import HELD_OUT_START, PRETRAIN_START
from study.inputs import prepare
from study.rebuild import build_model
from study.runstore import RunStore
from study.train import train
from tests.conftest import tiny_config

FAST = ["data.caption_coverage=1.0", "eval.probe_images=60"]


@pytest.mark.parametrize(("task", "loss"), [("contrastive", "heldout/contrastive"),
                                            ("self_distill", "heldout/feature_prediction")])
def test_each_stage_objective_learns(tmp_path, task, loss):
    cfg = tiny_config(f"objective.task={task}", "train.samples_seen=1600", *FAST)
    evals = RunStore(train(cfg, tmp_path / "run", quiet=True)).records("eval.jsonl")
    first, last = evals[0], evals[-1]
    assert first["step"] == 0 and last["final"]
    assert last[loss] < 0.8 * first[loss], (first[loss], last[loss])
    for attribute in ("shape", "colour", "size"):
        assert f"probe_acc/{attribute}" in first and f"chance/probe_{attribute}" in last
    if task == "contrastive":  # image-caption retrieval in a held-out batch of 8, chance 1/8
        assert last["heldout/retrieval_acc"] >= 0.5


def test_interrupted_stage_resumes_to_the_uninterrupted_weights(tmp_path):
    cfg = tiny_config("objective.task=contrastive", "train.samples_seen=320", *FAST)
    whole = RunStore(train(cfg, tmp_path / "whole", quiet=True))
    part = tmp_path / "part"
    train(cfg, part, until_step=10, quiet=True)
    assert RunStore(part).status()["state"] == "running"
    resumed = RunStore(train(cfg, part, quiet=True))
    a = torch.load(whole.checkpoints()[-1], weights_only=True)["model"]
    b = torch.load(resumed.checkpoints()[-1], weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert whole.records("metrics.jsonl") == [
        {**r, "samples_per_s": w["samples_per_s"]}
        for r, w in zip(resumed.records("metrics.jsonl"), whole.records("metrics.jsonl"), strict=True)]


def test_stage_encoder_loads_into_a_vlm_and_reads_its_own_index_range(tmp_path):
    cfg = tiny_config("objective.task=self_distill", "train.samples_seen=32", *FAST)
    store = RunStore(train(cfg, tmp_path / "enc", quiet=True))
    vlm_cfg = tiny_config(f"model.encoder_checkpoint={store.checkpoints()[-1]}", "model.freeze_encoder=true")
    vlm = build_model(prepare(vlm_cfg, tmp_path))
    state = torch.load(store.checkpoints()[-1], weights_only=True)["model"]
    assert all(torch.equal(v, state[f"encoder.{k}"]) for k, v in vlm.encoder.state_dict().items())
    assert not any(p.requires_grad for p in vlm.encoder.parameters())
    assert PRETRAIN_START >= HELD_OUT_START + 2**40 - 1  # beyond every held-out index the evaluations use
