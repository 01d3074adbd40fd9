"""Generation metrics, each beside two trivial predictors (the mean target; copying the current token).

Semantic targets: teacher-forced cosine and MSE, and free-running rollout error by step (predictions
fed back as inputs: directly for input-embedding targets, through the projector for encoder targets), beside
copying the last given target and predicting the mean target; and, in units every arm shares, how much of each
object's attributes the rolled-out features still carry (`study.evaluation.rollout_probe`).
Pixel targets: PSNR of predicted next patches, by diffusion sampling steps for the diffusion head.
Under bidirectional visual attention the next token's input is visible, so positions are scored
with half the visual inputs masked, on the masked positions only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from study.config import RunConfig
from study.data.world import Scene
from study.evaluation.rollout_probe import rollout_probes
from study.masking import random_mask
from study.model.flops import diffusion_sample_flops
from study.model.layers import KVCache
from study.model.unified import UnifiedModel
from study.model.vit import patchify


def _bos(model: UnifiedModel, n: int, device: torch.device) -> torch.Tensor:
    return torch.full((n, 1), model.bos_id, dtype=torch.long, device=device)


def _scored_positions(model: UnifiedModel, embeds: torch.Tensor,
                      gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states at positions 0..V-2 and which next-token targets (1..V-1) are scored."""
    b, v, _ = embeds.shape
    mask = None
    if model.visual_attention == "bidirectional":
        mask = random_mask(torch.full((b,), 0.5, dtype=torch.float64), v, gen).to(embeds.device)
    hidden, _ = model(model.mask_inputs(embeds, mask), _bos(model, b, embeds.device))
    where = mask[:, 1:] if mask is not None else torch.ones(b, v - 1, dtype=torch.bool, device=embeds.device)
    return hidden[:, : v - 1], where


def _cos_mse(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    pred, target = pred.float(), target.float()
    return (float(F.cosine_similarity(pred, target, dim=-1).mean()), float((pred - target).pow(2).mean()))


def _with_baselines(prefix: str, pred: torch.Tensor, target: torch.Tensor, copy_pred: torch.Tensor,
                    metric: Callable[[torch.Tensor, torch.Tensor], dict[str, float]]) -> dict[str, float]:
    mean_pred = target.mean(0, keepdim=True).expand_as(target)
    out = {}
    for name, p in (("model", pred), ("mean_target", mean_pred), ("copy_current", copy_pred)):
        for key, value in metric(p, target).items():
            out[f"{prefix}/{key}" if name == "model" else f"{prefix}_{name}/{key}"] = value
    return out


@torch.no_grad()
def semantic_metrics(model: UnifiedModel, cfg: RunConfig, images: torch.Tensor, gen: torch.Generator,
                     probe: tuple[torch.Tensor, list[Scene], list[Scene]] | None = None) -> dict:
    """Teacher-forced and free-running metrics of the semantic head on `images`, with their baselines; given
    `probe` (probe images, their scenes, and the scenes of `images`), the attribute probes on the rollout too."""
    enc, embeds = model.encode(images)
    targets = model.semantic_targets(enc, embeds)
    hidden, where = _scored_positions(model, embeds, gen)
    pred = model.semantic_head(hidden)[where]
    target, copy = targets[:, 1:][where], targets[:, :-1][where]

    def metric(p: torch.Tensor, t: torch.Tensor) -> dict[str, float]:
        cos, mse = _cos_mse(p, t)
        return {"cos": cos, "mse": mse}

    out = _with_baselines("sem", pred, target, copy, metric)
    rolled, positions = rollout(model, cfg, embeds), rollout_positions(model, cfg)
    out.update(rollout_errors(targets, rolled, positions))
    if probe is not None:
        out.update(rollout_probes(model, cfg, positions, probe[0], probe[1], targets, rolled, probe[2]))
    return out


def rollout_positions(model: UnifiedModel, cfg: RunConfig) -> range:
    """The visual positions a free-running rollout predicts: from the middle of the image, eval.rollout_steps."""
    start = model.num_visual // 2
    return range(start, start + min(cfg.eval.rollout_steps, model.num_visual - start))


@torch.no_grad()
def rollout(model: UnifiedModel, cfg: RunConfig, embeds: torch.Tensor) -> torch.Tensor:
    """The predicted targets (B, steps, D) at `rollout_positions`, each prediction fed back as the next input. With
    eval.rollout_cache and causal visual attention each predicted token is fed once through a KV cache (visual
    positions never attend to text, so no start token is needed); otherwise the prefix is recomputed each step."""
    positions = rollout_positions(model, cfg)
    inputs = embeds[:, :positions.start]
    bos = _bos(model, inputs.shape[0], inputs.device)
    cache = KVCache() if cfg.eval.rollout_cache and model.visual_attention == "causal" else None
    fresh, preds = inputs, []
    for _ in positions:
        if cache is None:
            hidden, _ = model(inputs, bos)
            pred = model.semantic_head(hidden[:, inputs.shape[1] - 1])
        else:
            hidden, _ = model(fresh, bos[:, :0], cache=cache)
            pred = model.semantic_head(hidden[:, -1])
        preds.append(pred)
        fed = pred if model.semantic_target == "semantic_input" else model.projector(pred)
        fresh = fed[:, None].to(inputs.dtype)
        inputs = torch.cat([inputs, fresh], dim=1)
    return torch.stack(preds, dim=1)


def rollout_errors(targets: torch.Tensor, preds: torch.Tensor, positions: range) -> dict[str, float]:
    """1 - cosine of the rollout `preds` (B, steps, D) to the true `targets` (B, V, D) at each free-running step k,
    beside the same error of copying the last given target (a collapsed arm's low rollout error is that
    baseline's) and of predicting the mean target (over the images and positions). Each arm's errors are in its
    own target space: divided by a baseline's, they are in units the arms share."""
    last_given = targets[:, positions.start - 1].float()  # the trivial rollout: repeat the last token it was given
    mean_target = targets.float().mean((0, 1)).expand_as(last_given)
    out = {}
    for k, position in enumerate(positions, start=1):
        truth = targets[:, position].float()
        for name, guess in (("", preds[:, k - 1]), ("_copy_last", last_given), ("_mean_target", mean_target)):
            out[f"rollout_err{name}/{k}"] = float(1 - F.cosine_similarity(guess.float(), truth, dim=-1).mean())
    return out


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of [-1, 1] patches, measured on the [0, 1] pixel scale."""
    mse = ((pred.float().clamp(-1, 1) - target.float()) / 2).pow(2).mean()
    return float(10 * math.log10(1.0 / max(float(mse), 1e-12)))


@torch.no_grad()
def pixel_metrics(model: UnifiedModel, cfg: RunConfig, images: torch.Tensor, gen: torch.Generator,
                  final: bool) -> tuple[dict, list[dict], torch.Tensor]:
    """PSNR (with baselines), PSNR by diffusion steps, and the decoded images (teacher-forced)."""
    patches = patchify(images * 2 - 1, cfg.model.patch_size)
    _, embeds = model.encode(images)
    hidden, where = _scored_positions(model, embeds, gen)
    target, copy = patches[:, 1:][where], patches[:, :-1][where]
    cond = hidden[where]
    diffusion = cfg.objective.pixel_head == "diffusion"
    step_list = sorted(cfg.eval.diffusion_steps) if final else [sorted(cfg.eval.diffusion_steps)[len(
        cfg.eval.diffusion_steps) // 2]]
    rows, pred = [], None
    for steps in step_list if diffusion else [0]:
        pred = model.pixel_head.sample(cond.float(), steps, gen) if diffusion else model.pixel_head(cond).float()
        if diffusion:
            rows.append({"diffusion_steps": steps, "psnr": psnr(pred, target),
                         "inference_flops_per_image": diffusion_sample_flops(cfg, steps)})
    out = _with_baselines("pix", pred, target, copy, lambda p, t: {"psnr": psnr(p, t)})
    decoded = patches.clone()
    decoded[:, 1:][where] = pred.to(decoded.dtype).clamp(-1, 1)
    return out, rows, decoded
