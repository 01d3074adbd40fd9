"""Can the miniature vision encoder represent shape at all? A calibration check for world v2.

    python scripts/supervised_shape_check.py [--preset cpu-v2] [--steps 1500] [--out FILE]

Trains the preset's vision encoder from scratch with a linear shape head on its cell-pooled features (the
linear probe's pooling), one cross-entropy term per object, on the preset's world and batch size; prints held-out
shape accuracy every 250 steps beside chance (1/5). Text only learns shape through the captions only; this
bounds what the encoder can do when the signal is direct, so a failure to learn shape from captions can be told
apart from an encoder or a world that cannot carry it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from study.config import RunConfig, load_config
from study.data.batch import make_batch
from study.data.loader import held_out_indices
from study.data.world import SHAPES, World
from study.data.worlds import build_world
from study.evaluation.probe import cell_of_patches
from study.model.vit import VisionEncoder

HELD_OUT = 512


def shape_logits(encoder: VisionEncoder, head: torch.nn.Linear, cells: torch.Tensor, world: World,
                 indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape logits of every object of the images at `indices`, from features pooled over its cell."""
    batch = make_batch(world, indices)
    features = encoder(batch.images)
    pooled = [features[i, cells == o.cell].mean(0) for i, sc in enumerate(batch.scenes) for o in sc.objects]
    labels = torch.tensor([o.shape for sc in batch.scenes for o in sc.objects])
    return head(torch.stack(pooled)), labels


def run(cfg: RunConfig, steps: int) -> list[str]:
    """Train the encoder with a supervised shape head; its held-out accuracy every 250 steps."""
    torch.manual_seed(cfg.train.seed)
    m = cfg.model
    encoder = VisionEncoder(cfg.data.image_size, m.patch_size, m.enc_width, m.enc_depth, m.heads, m.mlp_ratio)
    head = torch.nn.Linear(m.enc_width, len(SHAPES))
    opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=cfg.train.lr)
    cells, world, b = cell_of_patches(cfg.data.image_size, m.patch_size), build_world(cfg.data), cfg.train.batch_size
    lines = [f"supervised shape head on the {m.size} encoder (patch {m.patch_size}), world v{cfg.data.world_version}; "
             f"held-out accuracy on {HELD_OUT} images, chance {1 / len(SHAPES):.2f}"]
    for step in range(steps + 1):
        if step % 250 == 0:
            with torch.no_grad():
                logits, labels = shape_logits(encoder, head, cells, world, held_out_indices(0, HELD_OUT))
            lines.append(f"step {step}: held-out shape accuracy {(logits.argmax(-1) == labels).float().mean():.3f}")
            print(lines[-1], flush=True)
        if step == steps:
            break
        logits, labels = shape_logits(encoder, head, cells, world, np.arange(step * b, (step + 1) * b))
        opt.zero_grad()
        F.cross_entropy(logits, labels).backward()
        opt.step()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-v2")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = run(load_config(args.preset), args.steps)
    if args.out:
        args.out.write_text("\n".join([f"python scripts/supervised_shape_check.py --preset {args.preset} "
                                       f"--steps {args.steps}", *lines]) + "\n")


if __name__ == "__main__":
    main()
