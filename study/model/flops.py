"""Analytic FLOPs of every component (matmuls and attention; 2 FLOPs per multiply-add).

Training counts forward + backward (3x forward) for every component that gets gradients, and the
forward alone for a frozen encoder and the VAE; the second LLM passes some objectives make (`llm_masked_pass`,
`llm_semantic_pass`: the visual tokens again) are components of their own.
The counts are per sample. Dimensions come from the config (mini
backbone) or from the backbones' own config files (hf), the frozen KL VAE that makes pixel targets included
(`vae`: its encoder's forward, from its diffusers `config.json`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from study.config import RunConfig
from study.data.hf_files import read_config, vision_spec
from study.data.tokenizer import VOCAB
from study.errors import UserError


@dataclass(frozen=True)
class Dims:
    """The dimensions FLOPs depend on."""

    tokens: int      # visual tokens per image
    enc_in: int      # encoder input features per token (patch pixels x 3)
    enc_width: int
    enc_depth: int
    enc_hidden: int  # encoder MLP hidden width
    enc_mats: int    # encoder MLP matrices: 3 for SwiGLU, 2 for a plain MLP
    width: int
    depth: int
    hidden: int      # LLM MLP hidden width (SwiGLU)
    kv_width: int    # LLM key/value width (below `width` under grouped-query attention)
    vocab: int
    target: int      # pixel target features per token


@functools.cache
def backbone_dims(vision_path: str, llm_path: str, vae_path: str, latent_patch: int) -> Dims:
    """The dimensions of pretrained backbones, read from their config files (no weights are loaded)."""
    vc = read_config("vision_path", vision_path)
    vc, lc = getattr(vc, "vision_config", vc), read_config("llm_path", llm_path)
    swiglu = getattr(vc, "use_swiglu_ffn", False)
    head = lc.hidden_size // lc.num_attention_heads
    target = 0
    if vae_path:
        try:
            target = json.loads((Path(vae_path) / "config.json").read_text())["latent_channels"] * latent_patch ** 2
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"config key 'model.vae_path': cannot read '{vae_path}/config.json': "
                            f"{e.__class__.__name__}") from None
    return Dims((vision_spec(vision_path)[0] // vc.patch_size) ** 2, vc.patch_size ** 2 * 3, vc.hidden_size,
                vc.num_hidden_layers, int(vc.hidden_size * vc.mlp_ratio) if hasattr(vc, "mlp_ratio")  # DINOv2
                else vc.intermediate_size, 3 if swiglu else 2, lc.hidden_size, lc.num_hidden_layers,
                lc.intermediate_size, head * getattr(lc, "num_key_value_heads", lc.num_attention_heads),
                lc.vocab_size, target)


def _conv(side: int, k: int, c_in: int, c_out: int) -> float:
    return 2 * side * side * k * k * c_in * c_out


def _vae_resnet(side: int, c_in: int, c_out: int) -> float:
    """A ResnetBlock2D: two 3x3 convolutions, and a 1x1 shortcut when the width changes."""
    return _conv(side, 3, c_in, c_out) + _conv(side, 3, c_out, c_out) + (_conv(side, 1, c_in, c_out) if c_in != c_out
                                                                             else 0)


def _vae_attention(side: int, c: int) -> float:
    """One single-head attention over the side x side positions: q, k, v and out projections, QK^T and AV."""
    n = side * side
    return 4 * 2 * n * c * c + 2 * 2 * n * n * c


@functools.cache
def vae_encoder_flops(vae_path: str, side: int) -> float:
    """Forward FLOPs of a diffusers AutoencoderKL's encoder (and its quant conv) on one side x side image, from its
    config.json: the posterior its pixel targets are read from."""
    try:
        c = json.loads((Path(vae_path) / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"config key 'model.vae_path': cannot read '{vae_path}/config.json': "
                        f"{e.__class__.__name__}") from None
    widths, layers = c["block_out_channels"], c.get("layers_per_block", 1)
    latent = c.get("latent_channels", 4)
    flops, s, c_in = _conv(side, 3, c.get("in_channels", 3), widths[0]), side, widths[0]
    for i, (kind, width) in enumerate(zip(c.get("down_block_types", ["DownEncoderBlock2D"] * len(widths)), widths,
                                          strict=True)):
        for _ in range(layers):
            flops += _vae_resnet(s, c_in, width) + (_vae_attention(s, width) if kind.startswith("Attn") else 0)
            c_in = width
        if i < len(widths) - 1:
            s //= 2
            flops += _conv(s, 3, width, width)  # the stride-2 downsampling convolution
    flops += 2 * _vae_resnet(s, c_in, c_in) + (_vae_attention(s, c_in) if c.get("mid_block_add_attention", True)
                                               else 0)
    flops += _conv(s, 3, c_in, 2 * latent)
    return flops + (_conv(s, 1, 2 * latent, 2 * latent) if c.get("use_quant_conv", True) else 0)


def vae_side(cfg: RunConfig, tokens: int) -> int:
    """The side of the image the VAE encodes: its latent grid is the visual token grid (study/model/hf.py)."""
    c = json.loads((Path(cfg.model.vae_path) / "config.json").read_text())
    return int(round(tokens ** 0.5)) * cfg.model.vae_latent_patch * 2 ** (len(c["block_out_channels"]) - 1)


def model_dims(cfg: RunConfig) -> Dims:
    """The dimensions of the run's model: from the config (mini backbone) or the backbones' config files (hf)."""
    m = cfg.model
    if m.backbone == "hf":
        return backbone_dims(m.vision_path, m.llm_path, m.vae_path if "pixel" in cfg.objective.parts() else "",
                             m.vae_latent_patch)
    patch_dim = m.patch_size ** 2 * 3
    return Dims((cfg.data.image_size // m.patch_size) ** 2, patch_dim, m.enc_width, m.enc_depth,
                int(m.enc_width * m.mlp_ratio), 3, m.width, m.depth, int(m.width * m.mlp_ratio), m.width, len(VOCAB),
                patch_dim)


def _transformer(tokens: int, width: int, depth: int, hidden: int, mats: int = 3, kv_width: int | None = None) -> float:
    kv = width if kv_width is None else kv_width
    per_block = tokens * (2 * (2 * width * width + 2 * width * kv) + 2 * mats * width * hidden) \
        + 2 * 2 * tokens * tokens * width
    return depth * per_block


def forward_flops(cfg: RunConfig, caption_tokens: int) -> dict[str, float]:
    """Forward FLOPs per sample, by component, for a caption of `caption_tokens` tokens."""
    o, d = cfg.objective, model_dims(cfg)
    v, ew, w = d.tokens, d.enc_width, d.width
    flops = {
        "encoder": 2 * v * d.enc_in * ew + _transformer(v, ew, d.enc_depth, d.enc_hidden, d.enc_mats),
        "projector": 2 * v * (ew * w + w * w),
        "llm": _transformer(v + caption_tokens, w, d.depth, d.hidden, 3, d.kv_width),
        "lm_head": 2 * caption_tokens * w * d.vocab,
    }
    parts = o.parts()
    visual_pass = _transformer(v, w, d.depth, d.hidden, 3, d.kv_width)  # the LLM over the visual tokens alone
    if cfg.masking.caption_on == "clean" and cfg.masking.distribution != "none":
        flops["llm_masked_pass"] = visual_pass
    semantic = "semantic_input" in parts or "semantic_encoder" in parts
    if semantic and not o.semantic_grad_to_inputs:
        flops["llm_semantic_pass"] = visual_pass
    if semantic:
        dim = w if "semantic_input" in parts else ew
        flops["semantic_head"] = 2 * (v - 1) * (w * w + w * dim)
    if "pixel" in parts:
        if cfg.model.backbone == "hf" and cfg.model.vae_path:
            flops["vae"] = vae_encoder_flops(cfg.model.vae_path, vae_side(cfg, v))
        if o.pixel_head == "diffusion":
            dw = o.diffusion_width
            per_draw = 2 * (2 * d.target * dw + 2 * dw * dw + w * dw + o.diffusion_depth * (2 * dw * dw + 3 * dw * dw))
            flops["pixel_head"] = (v - 1) * per_draw * o.diffusion_batch_mul
        else:
            flops["pixel_head"] = 2 * (v - 1) * (w * w + w * d.target)
    return flops


def train_flops_per_sample(cfg: RunConfig, caption_tokens: int) -> float:
    """Training FLOPs of one sample: forward and backward (3x) of trained parts, forward only of frozen ones."""
    total = 0.0
    for name, f in forward_flops(cfg, caption_tokens).items():
        frozen = name == "vae" or (name == "encoder" and cfg.model.freeze_encoder)
        total += f if frozen else 3 * f
    return total


def diffusion_sample_flops(cfg: RunConfig, steps: int) -> float:
    """Forward FLOPs per sample of decoding every visual token with `steps` diffusion steps."""
    fwd = forward_flops(cfg, 0)
    per_draw = fwd.get("pixel_head", 0.0) / cfg.objective.diffusion_batch_mul
    return fwd["encoder"] + fwd["projector"] + fwd["llm"] + steps * per_draw


def encoder_stage_flops_per_sample(cfg: RunConfig, caption_tokens: int) -> float:
    """Training FLOPs per sample of an encoder-pretraining stage: the ViT forward and backward, plus the text
    tower (contrastive) or the EMA teacher's forward and the predictor (self_distill)."""
    d = model_dims(cfg)
    v, ew = d.tokens, d.enc_width
    vit = 2 * v * d.enc_in * ew + _transformer(v, ew, d.enc_depth, d.enc_hidden, d.enc_mats)
    if cfg.objective.task == "contrastive":
        text = _transformer(caption_tokens, ew, d.enc_depth, d.enc_hidden, d.enc_mats)
        return 3 * (vit + text)
    return 3 * (vit + 2 * v * 2 * ew * ew) + vit
