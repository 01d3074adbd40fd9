"""One encoder-pretraining run (objective.task contrastive or self_distill), trained by the shared loop
(study/loop.py): the same run store, schedule, checkpoints, preemption and resume guarantee as a VLM run, in one
process. Batches are world indices [PRETRAIN_START, PRETRAIN_START + D) of the run's world, in the order of
`training_indices`, disjoint from every VLM training range and from the held-out range. Evaluations are the stage's
probes (`study.pretrain.evaluate`), step 0 being the randomly initialised encoder. The completed run exports its
final weights, which its dependents load (study/upstream.py)."""

from __future__ import annotations

import torch
from torch import nn

from study.checkpoint import export_weights
from study.config import RunConfig
from study.data.batch import make_batch
from study.data.loader import training_indices
from study.data.tokenizer import max_caption_tokens
from study.data.world import PRETRAIN_START, World
from study.draws import step_generator
from study.model.flops import encoder_stage_flops_per_sample
from study.pretrain.evaluate import evaluate_stage
from study.pretrain.objectives import build_objective
from study.runstore import RunStore


class StageTrainee:
    """An encoder-pretraining stage as the loop's trainee: `model` is the objective module (encoder and heads)."""

    def __init__(self, cfg: RunConfig, world: World, store: RunStore):
        self.cfg, self.world, self.store = cfg, world, store
        self.model: nn.Module = build_objective(cfg)
        self.flops_per_sample = encoder_stage_flops_per_sample(cfg, max_caption_tokens(cfg.data.max_objects))

    def step(self, step: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        batch = make_batch(self.world, PRETRAIN_START + training_indices(self.cfg, step))
        losses = self.model(batch.images, batch.tokens, step_generator(self.cfg.train.seed, step))
        losses["total"].backward()
        n = batch.images.shape[0]
        counts = {"tokens": torch.tensor(n * self.model.encoder.num_tokens),
                  "flops": torch.tensor(n * self.flops_per_sample, dtype=torch.float64)}
        return {k: v.detach() for k, v in losses.items()}, counts

    def after_update(self) -> None:
        if hasattr(self.model, "after_step"):
            self.model.after_step()

    def evaluate(self, step: int, final: bool) -> dict:
        return evaluate_stage(self.model, self.cfg, self.world, step)

    def completed(self) -> dict:
        return export_weights(self.store, self.model.state_dict())  # what downstream runs load, committed

    def close(self) -> None:
        pass
