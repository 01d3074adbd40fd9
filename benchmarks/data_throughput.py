"""Miniature-world images per second on one core vs the training loop's consumption (target >= 10x).

Both are measured in this run: rendering (image + caption + tokenisation, one thread) and the full
training step of the same preset (2 threads, as `unihetero train` runs it).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from benchmarks.common import best_rate, write_result
from study.config import load_config
from study.data.batch import make_batch
from study.data.loader import TrainStream
from study.data.worlds import build_world
from study.loop import build_optimizer
from study.masking import sample_mask
from study.model.unified import UnifiedModel
from study.objectives import compute_losses


def render_rate(preset: str, images: int = 2048) -> float:
    """World images rendered per second, one batch of `images` at a time."""
    cfg = load_config(preset)
    world = build_world(cfg.data)
    indices = np.arange(images)
    return best_rate(lambda: len(make_batch(world, indices).scenes))


def train_rate(preset: str, steps: int = 20) -> float:
    """Samples per second of training steps on pre-rendered batches."""
    cfg = load_config(preset)
    torch.manual_seed(0)
    model = UnifiedModel(cfg)
    opt = build_optimizer(model, cfg)
    stream = TrainStream(cfg, build_world(cfg.data), 0, prefetch=False)
    batches = [b for _, b in zip(range(steps), stream, strict=False)]

    def run() -> int:
        for batch in batches:
            mask = sample_mask(cfg.masking, batch.images.shape[0], model.num_visual, None)
            compute_losses(model, cfg, batch.images, batch.tokens, mask, None)["total"].backward()
            opt.step()
            opt.zero_grad()
        return steps * cfg.train.batch_size

    return best_rate(run, repeats=2)


def main(preset: str = "cpu-small") -> dict:
    torch.set_num_threads(1)
    render = render_rate(preset)
    torch.set_num_threads(2)
    train = train_rate(preset)
    result = {"preset": preset, "render_images_per_s_one_core": render, "train_samples_per_s": train,
              "ratio": render / train, "target": 10.0, "met": render / train >= 10.0}
    print(f"data: render {render:.0f} img/s (1 core) vs train {train:.0f} samples/s -> "
          f"{render / train:.1f}x (target >= 10x) -> {write_result('data', result)}")
    return result


if __name__ == "__main__":
    main(*sys.argv[1:])
