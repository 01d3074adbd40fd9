"""A VLM run as the shared loop's trainee (study/loop.py): its model laid out on the ranks, one training step, and
its evaluations.

Several ranks (torchrun; see study/distributed.py) and micro-batches (`train.grad_accum`) split the same global
batch into shards of batch_size / (ranks x grad_accum) rows, rank r taking shards r x grad_accum ... Each loss is a
mean over its own units (caption: non-pad next tokens; semantic and pixel: generation positions), so a shard's loss
is weighted by its share of the global batch's units: the shards' weighted losses, and their gradients, add up to
those of the whole batch. Every random draw (the mask, the diffusion head's timesteps and noise) is made for the
global batch and sliced (study/draws.py). So a 2-rank run matches the 1-rank one within float rounding, and a run
resumed on another number of ranks goes on as if it had not stopped. Logged losses are these global means, summed
on their device between log steps (study/step_log.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import torch
from torch import nn

from study import distributed
from study.config import RunConfig
from study.data.batch import Batch
from study.data.loader import training_stream
from study.distributed import Ranks
from study.draws import Draws, step_draws
from study.evaluate import evaluate
from study.evaluation.ranks import Split
from study.inputs import RunInputs
from study.model import meta_init
from study.model.flops import train_flops_per_sample
from study.model.unified import UnifiedModel
from study.objectives import loss_terms, unit_counts
from study.rebuild import build_model
from study.runstore import RunStore

LOSS_WEIGHTS = {"caption": "understanding_weight", "semantic": "semantic_weight", "pixel": "pixel_weight"}


def autocast(cfg: RunConfig, device: torch.device) -> torch.autocast:
    """bf16 autocast on the device when the config trains in bf16, a no-op otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")


class LossModule(nn.Module):
    """The losses as one forward: what DDP and FSDP wrap (a DDP wrapper would hide the model's methods)."""

    def __init__(self, model: UnifiedModel, cfg: RunConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, images: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, diffusion: tuple[torch.Tensor, torch.Tensor] | None = None,
                task: Callable[[UnifiedModel], dict] | None = None) -> dict:
        """The losses of a batch given its draws; or, given `task`, `task(model)` (an evaluation run through the
        root's forward, see `distributed.call_in_root`)."""
        if task is not None:
            return task(self.model)
        return loss_terms(self.model, self.cfg, images, tokens, mask, diffusion)


def weighted_losses(losses: dict[str, torch.Tensor], shares: dict[str, float],
                    cfg: RunConfig) -> dict[str, torch.Tensor]:
    """Each loss times its shard's share of the batch's units, and 'total', their objective-weighted sum."""
    out = {k: v * shares[k] for k, v in losses.items() if k != "total"}
    out["total"] = sum(getattr(cfg.objective, LOSS_WEIGHTS[k]) * v for k, v in out.items())
    return out


def rank_rows(cfg: RunConfig, ranks: Ranks, batch: Batch, draws: Draws) -> tuple[torch.Tensor, torch.Tensor, Draws]:
    """This rank's images, tokens and draws. World batches are the global batch on every rank; shard batches are
    this rank's already (batch_size / ranks samples, fewer after a corrupt one)."""
    per_rank = cfg.train.batch_size // ranks.world
    start = ranks.rank * per_rank
    images, tokens = batch.images, batch.tokens
    if cfg.data.source != "shards":
        images, tokens = images[start:start + per_rank], tokens[start:start + per_rank]
    return images, tokens, draws.slice(start, start + images.shape[0])


def train_step(loss_fn: nn.Module, model: UnifiedModel, cfg: RunConfig, ranks: Ranks, batch: Batch, step: int,
               flops_per_sample: Callable[[int], float]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Forward and backward of this rank's micro-batches; the step's global mean losses and its global token and
    FLOP counts, as tensors not read back to the host."""
    images, tokens, draws = rank_rows(cfg, ranks, batch, step_draws(model, cfg, step, ranks.device))
    n, accum = images.shape[0], cfg.train.grad_accum
    bounds = [n * i // accum for i in range(accum + 1)]
    parts = [draws.slice(bounds[i], bounds[i + 1]) for i in range(accum)]
    rows = [slice(bounds[i], bounds[i + 1]) for i in range(accum)]
    units = [unit_counts(model, cfg, tokens[r], part.mask) for r, part in zip(rows, parts, strict=True)]
    local = {k: sum(u[k] for u in units) for k in units[0]} | {
        "tokens": (tokens != model.pad_id).sum() + model.num_visual * n,
        "flops": torch.tensor(n * flops_per_sample(tokens.shape[1]), dtype=torch.float64)}  # from shapes
    totals = distributed.global_sums(local, ranks)
    sums: dict[str, torch.Tensor] = {}
    for micro, (r, part) in enumerate(zip(rows, parts, strict=True)):
        # float64 division rounded to float32: what a host float times a float32 loss computed before
        shares = {k: (units[micro][k] / totals[k].clamp(min=1)).float() for k in units[micro]}
        with distributed.gradient_sync(loss_fn, sync=micro == accum - 1):
            with autocast(cfg, ranks.device):
                images_in, tokens_in = (x.to(ranks.device, non_blocking=True) for x in (images[r], tokens[r]))
                if images_in.dtype == torch.uint8:  # shard batches travel as bytes, become floats on the device
                    images_in = images_in.float().div_(255)
                part = part.to(ranks.device)
                losses = weighted_losses(loss_fn(images_in, tokens_in, part.mask, part.diffusion), shares, cfg)
            (losses["total"] * ranks.world).backward()  # DDP and FSDP average gradients over ranks
        for k, v in losses.items():
            sums[k] = sums.get(k, 0) + v.detach()
    return distributed.global_sums(sums, ranks), {k: totals[k] for k in ("tokens", "flops")}


def build_parallel(inputs: RunInputs, ranks: Ranks) -> tuple[UnifiedModel, nn.Module]:
    """The run's model and the module to call for its losses, laid out on the ranks. Pretrained backbones sharded by
    FSDP are initialised on the meta device and filled from rank 0's model (study/model/meta_init.py): no rank
    holds the whole model on its device; anything else is built whole and moved to the device."""
    cfg = inputs.resolved
    if not distributed.meta_initialised(cfg, ranks):
        model = build_model(inputs).to(ranks.device)
        return model, distributed.parallelize(LossModule(model, cfg), model, cfg, ranks)
    model = build_model(inputs, weights=ranks.main)
    state = model.state_dict() if ranks.main else {}  # rank 0's values outlive its parameters' move to meta
    meta_init.to_meta(model)
    loss_fn = distributed.parallelize(LossModule(model, cfg), model, cfg, ranks)
    meta_init.materialise(loss_fn, model, ranks.device, state)
    return model, loss_fn


class VLMTrainee:
    """A VLM run on `ranks`: `model` is the unified model (its blocks sharded under FSDP), trained through
    `loss_fn`, on the batches of its world or shards."""

    def __init__(self, inputs: RunInputs, store: RunStore, ranks: Ranks):
        self.inputs, self.cfg, self.store, self.ranks = inputs, inputs.resolved, store, ranks
        self.model, self.loss_fn = build_parallel(inputs, ranks)
        self.flops_per_sample = functools.cache(lambda tokens: train_flops_per_sample(self.cfg, tokens))
        self.stream = None
        self.batches: Iterator[Batch] | None = None

    def step(self, step: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        if self.batches is None:  # the stream starts at the loop's first step: 0, or where the run resumes
            self.stream = training_stream(self.cfg, self.inputs.world, step, self.store.path)
            self.batches = iter(self.stream)
        return train_step(self.loss_fn, self.model, self.cfg, self.ranks, next(self.batches), step,
                          self.flops_per_sample)

    def after_update(self) -> None:
        self.model.update_ema(self.cfg.objective.target_ema)

    def evaluate(self, step: int, final: bool) -> dict:
        """Every rank evaluates on its device, in the run's precision, on the live model (an FSDP-sharded one
        gathered block by block, as in training): nothing is gathered whole or rebuilt (study/evaluate.py)."""
        ranks = self.ranks

        def task(live: UnifiedModel) -> dict:
            return evaluate(live, self.cfg, step, final, self.inputs.world,
                            run_dir=self.store.path if ranks.main else None, split=Split(ranks.rank, ranks.world))

        with autocast(self.cfg, ranks.device):
            return distributed.call_in_root(self.loss_fn, self.model, task)

    def completed(self) -> dict:
        return {}

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
