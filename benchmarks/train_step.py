"""Training-step throughput: the toolkit's trainer vs a minimal hand-written PyTorch loop (target >= 0.98).

The reference runs the same model, batch size and precision on batches already in memory, with no
logging, checkpoints or data pipeline. The toolkit number is `study.train.train` itself at the
preset's logging interval of 10 steps: the times of its 10-step blocks from the metrics records (data
rendering, masking, logging included; the evaluations before and after training excluded), against the
times of the reference's 10-step blocks. The two alternate for several rounds and the ratio is of the
median block times over all rounds, so a busy moment on a shared machine slows a few blocks of either
rather than a whole round. The mean-based ratio is recorded beside it, and so is the time to
render one batch (the toolkit's data cost, which the reference does not pay), timed in every round beside the
reference's steps (median over rounds). A third side, the
toolkit's trainer fed the reference's pre-rendered batches, separates the cost of the training loop
itself (masking, loss bookkeeping, scheduler, logging) from the cost of rendering.
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import sys
import tempfile
import time
from unittest import mock

import torch

from benchmarks.common import write_result
from study.config import RunConfig, load_config
from study.data.batch import make_batch
from study.data.loader import TrainStream, training_indices
from study.data.worlds import build_world
from study.loop import build_optimizer
from study.model.unified import UnifiedModel
from study.objectives import compute_losses
from study.runstore import RunStore
from study.train import train

OBJECTIVES = {"none": [], "semantic_input": ["objective.target=semantic_input"],
              "pixel_diffusion": ["objective.target=pixel", "objective.pixel_head=diffusion",
                                  "objective.diffusion_width=256"]}
STEPS, WARMUP, BLOCK, ROUNDS = 60, 10, 10, 6


def reference_batches(cfg: RunConfig) -> list:
    """The 8 batches both hand loop and pre-rendered trainer cycle through (rendered before timing)."""
    stream = TrainStream(cfg, build_world(cfg.data), 0, prefetch=False)
    return [b for _, b in zip(range(8), stream, strict=False)]


def reference_step_seconds(cfg: RunConfig, steps: int = STEPS) -> list[float]:
    """Seconds of each step after the warmup of the hand-written loop on batches already in memory."""
    torch.manual_seed(0)
    model = UnifiedModel(cfg)
    opt = build_optimizer(model, cfg)
    batches = reference_batches(cfg)
    gen = torch.Generator().manual_seed(0)
    times = []
    for step in range(steps):
        tick = time.perf_counter()
        b = batches[step % len(batches)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16"):
            loss = compute_losses(model, cfg, b.images, b.tokens, None, gen)["total"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - tick)
    return times[WARMUP:]


def reference_rate(cfg: RunConfig, steps: int = STEPS) -> float:
    """Samples per second of the hand-written loop (mean over the steps after the warmup)."""
    return cfg.train.batch_size / statistics.fmean(reference_step_seconds(cfg, steps))


def reference_block_seconds(cfg: RunConfig) -> list[float]:
    """Seconds of each 10-step block after the warmup of the hand-written loop."""
    times = reference_step_seconds(cfg)
    return [sum(times[i:i + BLOCK]) for i in range(0, len(times), BLOCK)]


class _Prerendered:
    """A training stream that cycles through batches already in memory (the reference's)."""

    def __init__(self, batches: list):
        self.batches = batches

    def __iter__(self):
        return itertools.cycle(self.batches)

    def close(self) -> None:
        pass


def toolkit_block_seconds(cfg: RunConfig, prerendered: bool = False) -> list[float]:
    """Seconds of each 10-step block after the warmup of `study.train.train`, from its metrics records;
    with `prerendered`, its stream is replaced by the reference's batches (the loop's own cost only)."""
    batches = reference_batches(cfg) if prerendered else None
    stream = mock.patch("study.vlm.training_stream", lambda *_: _Prerendered(batches)) if prerendered \
        else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as tmp, stream:
        train(cfg, tmp, quiet=True)
        records = RunStore(tmp).records("metrics.jsonl")
    return [BLOCK * cfg.train.batch_size / r["samples_per_s"] for r in records if r["step"] > WARMUP]


def render_times(cfg: RunConfig, batches: int = 10, first_step: int = 0) -> list[float]:
    """Seconds to render each of `batches` training batches on the calling thread."""
    world, times = build_world(cfg.data), []
    for step in range(first_step, first_step + batches):
        tick = time.perf_counter()
        make_batch(world, training_indices(cfg, step))
        times.append(time.perf_counter() - tick)
    return times


def main(preset: str = "cpu-small", name: str = "train_step") -> dict:
    rows = []
    for objective, overrides in OBJECTIVES.items():
        cfg = load_config(preset, [*overrides, f"train.samples_seen={STEPS * 64}", "train.batch_size=64",
                                   f"train.log_every={BLOCK}", "eval.num_images=4", "eval.probe_images=20",
                                   "eval.every=0", "eval.inference_scaling=false"])
        refs, tools, loops, renders = [], [], [], []
        for i in range(ROUNDS):  # rendering is timed in every round too, beside the steps it is a share of
            refs += reference_block_seconds(cfg)
            renders += render_times(cfg, first_step=10 * i)
            tools += toolkit_block_seconds(cfg)
            loops += toolkit_block_seconds(cfg, prerendered=True)
        ref, tool, loop = statistics.median(refs), statistics.median(tools), statistics.median(loops)
        ratio, mean_ratio = ref / tool, statistics.fmean(refs) / statistics.fmean(tools)
        render = statistics.median(renders)
        samples = BLOCK * cfg.train.batch_size
        rows.append({"objective": objective, "reference_samples_per_s": samples / ref,
                     "toolkit_samples_per_s": samples / tool, "ratio": ratio, "ratio_of_means": mean_ratio,
                     "loop_only_ratio": ref / loop,
                     "render_ms_per_batch": 1e3 * render,
                     "render_share_of_reference_step": BLOCK * render / ref, "blocks_per_side": len(refs),
                     "target": 0.98, "met": ratio >= 0.98})
        print(f"train step [{preset}, {objective}]: toolkit {samples / tool:.0f} vs reference {samples / ref:.0f} "
              f"samples/s -> "
              f"{ratio:.3f} (means {mean_ratio:.3f}; trainer on pre-rendered batches {ref / loop:.3f}); "
              f"rendering a batch {1e3 * render:.1f} ms = "
              f"{BLOCK * render / ref:.1%} of a reference step")
        result = {"preset": preset, "threads": torch.get_num_threads(), "rows": rows,
                  "complete": len(rows) == len(OBJECTIVES)}
        path = write_result(name, result)  # after every objective: a run cut short keeps its finished rows
    print(f"-> {path}")
    return result


if __name__ == "__main__":
    main(*sys.argv[1:])
