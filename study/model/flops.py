"""Analytic FLOPs of every component (matmuls and attention; 2 FLOPs per multiply-add).

Training counts forward + backward (3x forward) for every component that gets gradients, and the
forward alone for a frozen encoder. The counts are per sample.
"""

from __future__ import annotations

from study.config import RunConfig
from study.data.tokenizer import VOCAB


def _transformer(tokens: int, width: int, depth: int, mlp_ratio: float) -> float:
    hidden = int(width * mlp_ratio)
    per_block = tokens * (2 * 4 * width * width + 2 * 3 * width * hidden) + 2 * 2 * tokens * tokens * width
    return depth * per_block


def forward_flops(cfg: RunConfig, caption_tokens: int) -> dict[str, float]:
    """Forward FLOPs per sample, by component, for a caption of `caption_tokens` tokens."""
    m, o = cfg.model, cfg.objective
    v = (cfg.data.image_size // m.patch_size) ** 2
    patch_dim = m.patch_size ** 2 * 3
    ew, w = m.enc_width, m.width
    flops = {
        "encoder": 2 * v * patch_dim * ew + _transformer(v, ew, m.enc_depth, m.mlp_ratio),
        "projector": 2 * v * (ew * w + w * w),
        "llm": _transformer(v + caption_tokens, w, m.depth, m.mlp_ratio),
        "lm_head": 2 * caption_tokens * w * len(VOCAB),
    }
    parts = o.parts()
    if "semantic_input" in parts or "semantic_encoder" in parts:
        dim = w if "semantic_input" in parts else ew
        flops["semantic_head"] = 2 * (v - 1) * (w * w + w * dim)
    if "pixel" in parts:
        if o.pixel_head == "diffusion":
            dw = o.diffusion_width
            per_draw = 2 * (2 * patch_dim * dw + 2 * dw * dw + w * dw + o.diffusion_depth * (2 * dw * dw + 3 * dw * dw))
            flops["pixel_head"] = (v - 1) * per_draw * o.diffusion_batch_mul
        else:
            flops["pixel_head"] = 2 * (v - 1) * (w * w + w * patch_dim)
    return flops


def train_flops_per_sample(cfg: RunConfig, caption_tokens: int) -> float:
    total = 0.0
    for name, f in forward_flops(cfg, caption_tokens).items():
        frozen = name == "encoder" and cfg.model.freeze_encoder
        total += f if frozen else 3 * f
    return total


def diffusion_sample_flops(cfg: RunConfig, steps: int) -> float:
    """Forward FLOPs per sample of decoding every visual token with `steps` diffusion steps."""
    fwd = forward_flops(cfg, 0)
    per_draw = fwd.get("pixel_head", 0.0) / cfg.objective.diffusion_batch_mul
    return fwd["encoder"] + fwd["projector"] + fwd["llm"] + steps * per_draw
