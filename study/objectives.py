"""Training losses: caption next-token CE, semantic next-visual-token regression, pixel prediction."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from study.config import RunConfig
from study.data.tokenizer import PAD_ID
from study.model.unified import UnifiedModel


def caption_loss(logits: torch.Tensor, tokens: torch.Tensor, pad_id: int = PAD_ID) -> torch.Tensor:
    """Mean CE of predicting tokens[1:] from text positions; padding is ignored."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), ignore_index=pad_id)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token loss (N,) between predicted and target vectors."""
    pred, target = pred.float(), target.float()
    if kind == "cosine":
        return 1 - F.cosine_similarity(pred, target, dim=-1)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, reduction="none").mean(-1)
    return (pred - target).pow(2).mean(-1)


def generation_positions(mask: torch.Tensor | None, loss_on: str, batch: int, num_visual: int,
                         device: torch.device) -> torch.Tensor:
    """Boolean (B, V-1): which next-token targets (visual tokens 1..V-1) carry generation loss."""
    if loss_on == "masked" and mask is not None:
        return mask[:, 1:]
    return torch.ones(batch, num_visual - 1, dtype=torch.bool, device=device)


def compute_losses(model: UnifiedModel, cfg: RunConfig, images: torch.Tensor, tokens: torch.Tensor,
                   mask: torch.Tensor | None, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Every active loss, unweighted, plus 'total' (the weighted sum that is optimised)."""
    o = cfg.objective
    enc, embeds = model.encode(images)
    hidden, _ = model(model.mask_inputs(embeds, mask), tokens)
    v = model.num_visual
    losses = {"caption": caption_loss(model.text_logits(hidden, v), tokens, model.pad_id)}
    total = o.understanding_weight * losses["caption"]
    where = generation_positions(mask, cfg.masking.loss_on, images.shape[0], v, images.device)
    h_next = hidden[:, : v - 1][where]  # hidden state at i predicts visual token i + 1
    if model.semantic_head is not None:
        target = model.semantic_targets(enc, embeds)[:, 1:][where]
        per_token = regression_loss(model.semantic_head(h_next), target, o.semantic_loss)
        losses["semantic"] = per_token.sum() / max(1, per_token.numel())
        total = total + o.semantic_weight * losses["semantic"]
    if model.pixel_head is not None:
        target = model.pixel_targets(images)[:, 1:][where]
        cond = h_next if o.pixel_grad_to_llm else h_next.detach()
        if cond.shape[0] == 0:  # nothing masked in this batch under loss_on=masked
            losses["pixel"] = hidden.new_zeros(())
        elif o.pixel_head == "diffusion":
            losses["pixel"] = model.pixel_head.loss(target, cond, o.diffusion_batch_mul, generator)
        else:
            losses["pixel"] = regression_loss(model.pixel_head(cond), target, "mse").mean()
        total = total + o.pixel_weight * losses["pixel"]
    losses["total"] = total
    return losses
