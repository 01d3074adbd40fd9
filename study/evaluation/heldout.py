"""Evaluation on held-out shards, where there is no ground truth beyond the captions.

Held-out caption loss; where the objective has them, the semantic and pixel losses (the training losses
on held-out images, unmasked) and the semantic metrics of `generation.semantic_metrics` (teacher-forced
cosine and MSE beside trivial predictors, rollout error); the number of evaluated samples and of corrupt
training samples skipped so far.
"""

from __future__ import annotations

from pathlib import Path

import torch

from study.config import RunConfig
from study.data.shards import ERRORS, Captions, held_out_batches
from study.errors import UserError
from study.evaluation.diagnostics import collapse_diagnostics
from study.evaluation.generation import semantic_metrics
from study.model.unified import UnifiedModel
from study.objectives import compute_losses
from study.runstore import read_jsonl

BATCH = 64
NAMES = {"caption": "caption_loss", "semantic": "semantic_loss", "pixel": "pixel_loss"}


@torch.no_grad()
def heldout_metrics(model: UnifiedModel, cfg: RunConfig, step: int, gen: torch.Generator,
                    run_dir: Path | None) -> dict:
    batches = list(held_out_batches(cfg, Captions(cfg), cfg.eval.num_images, BATCH))
    n = sum(len(b.images) for b in batches)
    if n == 0:
        raise UserError(f"config key 'data.held_out_shards': the held-out shards of '{cfg.data.shards}' hold no "
                        "readable sample")
    active = [k for k, head in (("caption", True), ("semantic", model.semantic_head), ("pixel", model.pixel_head))
              if head is not None]
    out: dict = {NAMES[k]: 0.0 for k in active}
    for batch in batches:
        losses = compute_losses(model, cfg, batch.images, batch.tokens, None, gen)
        for k in active:
            out[NAMES[k]] += float(losses[k]) * len(batch.images) / n
    out.update(collapse_diagnostics(model.encode(batches[0].images)[1]))
    if model.semantic_head is not None:
        out.update(semantic_metrics(model, cfg, batches[0].images, gen))
    out["data/eval_samples"] = n
    if run_dir is not None:
        out["data/corrupt_skipped"] = sum(r["step"] <= step for r in read_jsonl(Path(run_dir) / ERRORS))
    return out
