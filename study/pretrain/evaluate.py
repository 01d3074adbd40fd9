"""A pretraining stage's evaluation on held-out images of the run's world: linear probes of shape, colour and size
from the encoder's token features pooled over each object's cell (`study.evaluation.probe`), and the objective's
own held-out loss. Step 0 is the randomly initialised encoder: the floor every later probe is read against."""

from __future__ import annotations

import torch
from torch import nn

from study.config import RunConfig
from study.data.batch import make_batch
from study.data.loader import held_out_indices
from study.data.world import World
from study.evaluation.probe import probe_scores


def eval_generator(cfg: RunConfig, step: int) -> torch.Generator:
    """The generator of a pretraining evaluation's random draws, fixed by seed and step."""
    return torch.Generator().manual_seed(cfg.train.seed * 7919 + step * 13 + 11)


@torch.no_grad()
def evaluate_stage(objective: nn.Module, cfg: RunConfig, world: World, step: int) -> dict[str, float]:
    """An encoder-pretraining stage's held-out losses and attribute probe scores at `step`."""
    was_training = objective.training
    objective.eval()
    held_out = make_batch(world, held_out_indices(0, cfg.eval.num_images))
    losses = objective(held_out.images, held_out.tokens, eval_generator(cfg, step))
    out = {f"heldout/{k}": float(v) for k, v in losses.items() if k != "total"}
    probe = make_batch(world, held_out_indices(cfg.eval.num_images, cfg.eval.probe_images))
    out.update(probe_scores(objective.encoder(probe.images), cfg, probe.scenes))
    objective.train(was_training)
    return out
