"""The memory a training step needs, estimated without allocating (study/model/memory.py), against a real step on
this CPU: the process's high-water mark during the step less its resident size before it (the model, its inputs),
on models whose step needs more than 1 GB, within 20%."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from study.config import load_config
from study.model.memory import GIB, estimate_step_memory
from tests.reliability.test_kill_resume import ROOT

LARGE = ["model.width=1024", "model.depth=8", "model.heads=16", "model.enc_width=512", "model.enc_depth=4",
         "train.batch_size=8"]
MEASURE = """
import json, sys, torch
from study.config import load_config
from study.draws import step_draws
from study.loop import build_optimizer
from study.model.unified import UnifiedModel
from study.model.memory import caption_length
from study.objectives import loss_terms

def kib(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key + ":"))

cfg = load_config("cpu-v2", sys.argv[1:])
torch.manual_seed(0)
model = UnifiedModel(cfg)
optimizer = build_optimizer(model, cfg)
rows, size = cfg.train.batch_size, cfg.data.image_size
images, tokens = torch.rand(rows, 3, size, size), torch.randint(1, 20, (rows, caption_length(cfg)))
draws = step_draws(model, cfg, 0, torch.device("cpu"))
before = kib("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # the high-water mark starts again from the resident size
with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16"):
    losses = loss_terms(model, cfg, images, tokens, draws.mask, draws.diffusion)
losses["total"].backward()
optimizer.step()
print(json.dumps({"step_bytes": (kib("VmHWM") - before) * 1024}))
"""


def _measured(overrides: list[str]) -> float:
    done = subprocess.run([sys.executable, "-c", MEASURE, *overrides], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["step_bytes"]


# the optimizer's state and temporaries dominate the first; activations the other two (2026-12-06: estimate /
# measured 1.18, 0.89, 0.98)
ACTIVATIONS = ["model.width=512", "model.depth=8", "model.heads=8", "model.enc_width=256", "model.enc_depth=4",
               "train.batch_size=128"]
SEMANTIC = ["model.width=768", "model.depth=6", "model.heads=12", "model.enc_width=384", "model.enc_depth=4",
            "train.batch_size=64", "objective.target=semantic_input"]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [LARGE, ACTIVATIONS, SEMANTIC])
def test_the_estimate_is_within_20_percent_of_a_real_steps_peak(overrides):
    estimate = estimate_step_memory(load_config("cpu-v2", overrides))
    assert estimate.peak > GIB  # the "configs of at least 1 GB"
    measured = _measured(overrides)
    expected = estimate.peak - estimate.params  # the parameters are resident before the step
    assert abs(measured - expected) < 0.2 * measured, (measured / GIB, expected / GIB)


def test_activation_checkpointing_and_sharding_lower_the_estimate():
    cfg = load_config("cpu-v2", ["train.batch_size=64"])
    plain = estimate_step_memory(cfg)
    checkpointed = estimate_step_memory(load_config("cpu-v2", ["train.batch_size=64",
                                                               "train.activation_checkpointing=true"]))
    assert checkpointed.activations < 0.5 * plain.activations
    sharded = estimate_step_memory(load_config("cpu-v2", LARGE), ranks=4, sharded=True)
    whole = estimate_step_memory(load_config("cpu-v2", LARGE), ranks=4)
    assert sharded.optimizer == pytest.approx(whole.optimizer / 4) and sharded.peak < 0.5 * whole.peak
