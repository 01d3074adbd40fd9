"""Training-step throughput: the toolkit's trainer vs a minimal hand-written PyTorch loop (target >= 0.95).

The reference runs the same model, batch size and precision on batches already in memory, with no
logging, checkpoints or data pipeline. The toolkit number is `study.train.train` itself: steady-state
samples/s from its metrics records (data rendering, masking, logging and checkpoints included; the
evaluations before and after training excluded). The two alternate for several rounds and the ratio
is of the medians, so a busy machine slows both alike.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import torch

from benchmarks.common import write_result
from study.config import RunConfig, load_config
from study.data.loader import TrainStream
from study.model.unified import UnifiedModel
from study.objectives import compute_losses
from study.runstore import RunStore
from study.train import build_optimizer, train

OBJECTIVES = {"none": [], "semantic_input": ["objective.target=semantic_input"],
              "pixel_diffusion": ["objective.target=pixel", "objective.pixel_head=diffusion",
                                  "objective.diffusion_width=256"]}
STEPS, WARMUP, ROUNDS = 60, 10, 3


def reference_rate(cfg: RunConfig) -> float:
    torch.manual_seed(0)
    model = UnifiedModel(cfg)
    opt = build_optimizer(model, cfg)
    stream = TrainStream(cfg, 0, prefetch=False)
    batches = [b for _, b in zip(range(8), stream, strict=False)]
    gen = torch.Generator().manual_seed(0)
    start = 0.0
    for step in range(STEPS):
        if step == WARMUP:
            start = time.perf_counter()
        b = batches[step % len(batches)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16"):
            loss = compute_losses(model, cfg, b.images, b.tokens, None, gen)["total"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (STEPS - WARMUP) * cfg.train.batch_size / (time.perf_counter() - start)


def toolkit_rate(cfg: RunConfig) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, tmp, quiet=True)
        records = RunStore(tmp).records("metrics.jsonl")
    steady = [r for r in records if r["step"] > WARMUP]
    seconds = sum(cfg.train.log_every * cfg.train.batch_size / r["samples_per_s"] for r in steady)
    return len(steady) * cfg.train.log_every * cfg.train.batch_size / seconds


def main(preset: str = "cpu-small") -> dict:
    rows = []
    for name, overrides in OBJECTIVES.items():
        cfg = load_config(preset, [*overrides, f"train.samples_seen={STEPS * 64}", "train.batch_size=64",
                                   "train.log_every=10", "eval.num_images=4", "eval.probe_images=20",
                                   "eval.every=0", "eval.inference_scaling=false"])
        refs, tools = [], []
        for _ in range(ROUNDS):
            refs.append(reference_rate(cfg))
            tools.append(toolkit_rate(cfg))
        ref, tool = statistics.median(refs), statistics.median(tools)
        rows.append({"objective": name, "reference_samples_per_s": ref, "toolkit_samples_per_s": tool,
                     "reference_rounds": refs, "toolkit_rounds": tools,
                     "ratio": tool / ref, "target": 0.95, "met": tool / ref >= 0.95})
        print(f"train step [{name}]: toolkit {tool:.0f} vs reference {ref:.0f} samples/s -> {tool / ref:.3f}")
    result = {"preset": preset, "threads": torch.get_num_threads(), "rows": rows}
    print(f"-> {write_result('train_step', result)}")
    return result


if __name__ == "__main__":
    main(*sys.argv[1:])
