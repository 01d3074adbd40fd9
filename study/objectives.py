"""Training losses: caption next-token CE, semantic next-visual-token regression, pixel prediction."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from study.config import RunConfig
from study.data.tokenizer import PAD_ID
from study.draws import diffusion_draws
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


def generation_weights(mask: torch.Tensor | None, loss_on: str) -> torch.Tensor | None:
    """Float (B, V-1) weights of the next-token targets (visual tokens 1..V-1) under loss_on=masked: 1 where the
    token was masked; None when every position carries generation loss. Weights, not boolean indexing, so a
    batch's shapes never depend on its mask (no host read, one compiled graph)."""
    if loss_on == "masked" and mask is not None:
        return mask[:, 1:].float()
    return None


def weighted_mean(per_token: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-token losses (B, V-1) over the positions that carry loss; 0 when none does."""
    if weights is None:
        return per_token.mean()
    return (per_token * weights).sum() / weights.sum().clamp(min=1)


def next_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, V-1, D) -> (B * (V-1), D), contiguous: the rows the generation heads read or predict."""
    return x.reshape(-1, x.shape[-1])


def generation_hidden(model: UnifiedModel, cfg: RunConfig, embeds: torch.Tensor, tokens: torch.Tensor,
                      mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states for the caption loss (B, V + L, D), for the generation heads (B, V, D), and for the semantic
    head (B, V, D). Visual positions never attend to text, so a forward of the visual tokens alone gives the
    same visual hidden states as the full sequence; the extra forwards below are that cheap kind:
    - masking.caption_on=clean: the caption reads the clean sequence, the generation heads the masked one;
    - objective.semantic_grad_to_inputs=false: the semantic head reads a forward of detached inputs, so its loss
      trains LLM and head but never reaches projector, encoder or mask embedding."""
    v = model.num_visual
    masked = model.mask_inputs(embeds, mask)
    clean_caption = cfg.masking.caption_on == "clean" and mask is not None
    hidden, _ = model(embeds if clean_caption else masked, tokens)
    no_text = tokens[:, :0]
    gen_hidden = model(masked, no_text)[0] if clean_caption else hidden[:, :v]
    sem_hidden = gen_hidden
    if model.semantic_head is not None and not cfg.objective.semantic_grad_to_inputs:
        sem_hidden = model(masked.detach(), no_text)[0]
    return hidden, gen_hidden, sem_hidden


def compute_losses(model: UnifiedModel, cfg: RunConfig, images: torch.Tensor, tokens: torch.Tensor,
                   mask: torch.Tensor | None, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Every active loss, unweighted, plus 'total' (the weighted sum that is optimised): the diffusion head's draws
    for these rows from `generator` (study/draws.py), then `loss_terms`."""
    draws = diffusion_draws(model, cfg, images.shape[0], generator, images.device)
    return loss_terms(model, cfg, images, tokens, mask, draws)


def loss_terms(model: UnifiedModel, cfg: RunConfig, images: torch.Tensor, tokens: torch.Tensor,
               mask: torch.Tensor | None, draws: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The losses given every random draw (`diffusion_draws`): no generator and no data-dependent shape inside, so
    it traces as one graph (`torch.compile`)."""
    o = cfg.objective
    enc, embeds = model.encode(images)
    hidden, gen_hidden, sem_hidden = generation_hidden(model, cfg, embeds, tokens, mask)
    v = model.num_visual
    losses = {"caption": caption_loss(model.text_logits(hidden, v), tokens, model.pad_id)}
    total = o.understanding_weight * losses["caption"]
    weights = generation_weights(mask, cfg.masking.loss_on)
    rows = (images.shape[0], v - 1)
    if model.semantic_head is not None:  # hidden state at i predicts visual token i + 1
        target = next_tokens(model.semantic_targets(enc, embeds)[:, 1:])
        pred = model.semantic_head(next_tokens(sem_hidden[:, : v - 1]))
        losses["semantic"] = weighted_mean(regression_loss(pred, target, o.semantic_loss).view(rows), weights)
        total = total + o.semantic_weight * losses["semantic"]
    if model.pixel_head is not None:
        h_next = next_tokens(gen_hidden[:, : v - 1])
        target = next_tokens(model.pixel_targets(images)[:, 1:])
        cond = h_next if o.pixel_grad_to_llm else h_next.detach()
        flat = None if weights is None else weights.flatten()
        if o.pixel_head == "diffusion":
            losses["pixel"] = model.pixel_head.loss(target, cond, o.diffusion_batch_mul, draws, flat)
        else:
            losses["pixel"] = weighted_mean(regression_loss(model.pixel_head(cond), target, "mse").view(rows), weights)
        total = total + o.pixel_weight * losses["pixel"]
    losses["total"] = total
    return losses


def unit_counts(model: UnifiedModel, cfg: RunConfig, tokens: torch.Tensor,
                mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """How many units each loss averages over in a batch (non-pad next tokens; generation positions), as tensors
    on the tokens' device."""
    weights = generation_weights(mask, cfg.masking.loss_on)
    positions = (tokens.new_tensor(tokens.shape[0] * (model.num_visual - 1)) if weights is None
                 else weights.sum().long())
    return {"caption": (tokens[:, 1:] != model.pad_id).sum(), "semantic": positions, "pixel": positions}
