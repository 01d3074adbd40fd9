"""A batch of images with their caption ids (and, from the world, their ground truth)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from study.data.tokenizer import PAD_ID, encode
from study.data.world import Scene, World


@dataclass
class Batch:
    """A training or evaluation batch: images, caption tokens and, for world batches, the ground truth."""

    images: torch.Tensor  # (B, 3, H, W): float in [0, 1]; uint8 in shard training batches (study.data.shards)
    tokens: torch.Tensor  # (B, L) caption ids, <bos> ... <eos>, right-padded with <pad>
    scenes: list[Scene]   # ground truth (world batches only)
    errors: list[dict] = field(default_factory=list)  # corrupt samples left out (shard batches only)


def pad_tokens(token_lists: list[list[int]], pad_id: int = PAD_ID) -> torch.Tensor:
    """Right-pad id lists with `pad_id` into a (B, L) tensor."""
    length = max(len(t) for t in token_lists)
    tokens = np.full((len(token_lists), length), pad_id, dtype=np.int64)
    for row, ids in enumerate(token_lists):
        tokens[row, : len(ids)] = ids
    return torch.from_numpy(tokens)


def make_batch(world: World, indices: np.ndarray) -> Batch:
    """The world's images (float, channels first), captions and scenes of `indices`."""
    images, scenes = world.render(indices)
    return Batch(torch.from_numpy(images), pad_tokens([encode(sc.caption) for sc in scenes]), scenes)
