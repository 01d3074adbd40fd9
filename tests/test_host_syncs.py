"""The training step's own code reads nothing back to the host between log records: losses, grad norms and counts
stay on their device (study/step_log.py) and are read once per log step, in VLM runs and encoder-pretraining stages
alike (one loop, study/loop.py). Reads inside torch are not the step's (CPU AdamW reads its CPU step counters; on
CUDA the fused AdamW keeps them on the device) and are not counted."""

import sys
from pathlib import Path

import pytest
import torch

import study.loop as loop_module
from study.train import train
from tests.conftest import tiny_config

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")
STUDY = str(Path(loop_module.__file__).parent)


@pytest.mark.parametrize("run", ["vlm-v1", "vlm-v2", "contrastive", "self_distill"])
def test_no_host_reads_between_log_steps(tmp_path, monkeypatch, run):
    kind = ["objective.target=semantic_input+pixel", "masking.distribution=truncnorm"] if run.startswith("vlm") \
        else [f"objective.task={run}"]
    cfg = tiny_config(*kind, "train.log_every=5", "train.samples_seen=320", "train.checkpoint_every=0",
                      "eval.every=0", f"data.world_version={2 if run == 'vlm-v2' else 1}", "data.caption_coverage=1.0")
    reads = {"n": 0}
    for name in READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, **kwargs):
            reads["n"] += sys._getframe(1).f_code.co_filename.startswith(STUDY)  # a read by the toolkit's code
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    per_step, seen = {}, {"n": 0}
    real_log = loop_module.Loop._log

    def log(self, acc, done, *args):  # called once per step, after the step's reads
        per_step[done], seen["n"] = reads["n"] - seen["n"], reads["n"]
        return real_log(self, acc, done, *args)

    monkeypatch.setattr(loop_module.Loop, "_log", log)
    train(cfg, tmp_path / "run", quiet=True)
    assert sorted(per_step) == list(range(1, 21))
    between = {step: n for step, n in per_step.items() if step % 5 and step > 1}  # step 1: setup, step-0 eval too
    assert all(n == 0 for n in between.values()), between
    assert all(per_step[step] > 0 for step in (5, 10, 15, 20))  # each log step reads its interval once
