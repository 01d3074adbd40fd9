"""Evaluation on held-out shards, where there is no ground truth beyond the captions.

Held-out caption loss; where the objective has them, the semantic and pixel losses (the training losses
on held-out images, unmasked) and the semantic metrics of `generation.semantic_metrics` (teacher-forced
cosine and MSE beside trivial predictors, rollout error); the number of evaluated samples and of corrupt
training samples skipped so far.

It runs where training runs: on every rank, on the rank's device, on the live model (an FSDP-sharded one
included: every rank makes the same forwards, so none is gathered or rebuilt). Each batch is split into one
contiguous block of rows per rank; each loss is a sum over its units (caption tokens, visual positions) and
the sums and unit counts are all-reduced, so the losses are the held-out means over units whatever the number
of ranks. The diagnostics and semantic metrics come from the first batch, computed alike on every rank.
The diffusion head's timesteps and noise (the pixel loss is a Monte Carlo estimate) are drawn for each whole
batch and sliced, so the estimate too is the same at any number of ranks.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from study.config import RunConfig
from study.data.shards import ERRORS, Captions, held_out_batches
from study.draws import Draws, diffusion_draws
from study.errors import UserError
from study.evaluation.diagnostics import collapse_diagnostics
from study.evaluation.generation import semantic_metrics
from study.model.unified import UnifiedModel
from study.objectives import loss_terms, unit_counts
from study.runstore import read_jsonl

BATCH = 64
NAMES = {"caption": "caption_loss", "semantic": "semantic_loss", "pixel": "pixel_loss"}


@torch.no_grad()
def heldout_metrics(model: UnifiedModel, cfg: RunConfig, step: int, gen: torch.Generator,
                    run_dir: Path | None, rank: int = 0, world: int = 1) -> dict:
    """Held-out loss of each active head (each rank its rows, summed over ranks), collapse diagnostics and semantic
    metrics of the first batch, samples evaluated."""
    batches = list(held_out_batches(cfg, Captions(cfg), cfg.eval.num_images, BATCH))
    n = sum(len(b.images) for b in batches)
    if n == 0:
        raise UserError(f"config key 'data.held_out_shards': the held-out shards of '{cfg.data.shards}' hold no "
                        "readable sample")
    device = next(model.parameters()).device
    noise = torch.Generator(device).manual_seed(gen.initial_seed())
    active = [k for k, head in (("caption", True), ("semantic", model.semantic_head), ("pixel", model.pixel_head))
              if head is not None]
    sums = torch.zeros(2, len(active), dtype=torch.float64, device=device)  # loss sums, unit counts
    for batch in batches:
        n = len(batch.images)
        draws = Draws(n, None, diffusion_draws(model, cfg, n, noise, device), cfg.objective.diffusion_batch_mul)
        rows = torch.tensor_split(torch.arange(n), world)[rank]
        weight = 1.0
        if len(rows) == 0:  # fewer rows than ranks: forward one row with weight 0, so every rank runs alike
            rows, weight = torch.arange(1), 0.0
        images, tokens = batch.images[rows].to(device), batch.tokens[rows].to(device)
        mine = draws.slice(int(rows[0]), int(rows[-1]) + 1)
        losses = loss_terms(model, cfg, images, tokens, None, mine.diffusion)
        counts = unit_counts(model, cfg, tokens, None)
        for j, k in enumerate(active):
            sums[0, j] += losses[k].double() * counts[k] * weight
            sums[1, j] += counts[k] * weight
    if world > 1:
        dist.all_reduce(sums)
    means = (sums[0] / sums[1].clamp(min=1)).tolist()
    out: dict = {NAMES[k]: means[j] for j, k in enumerate(active)}
    first = batches[0].images.to(device)
    out.update(collapse_diagnostics(model.encode(first)[1]))
    if model.semantic_head is not None:
        out.update(semantic_metrics(model, cfg, first, gen))
    out["data/eval_samples"] = n
    if run_dir is not None:
        out["data/corrupt_skipped"] = sum(r["step"] <= step for r in read_jsonl(Path(run_dir) / ERRORS))
    return out
