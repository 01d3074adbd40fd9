"""The unified model: vision encoder -> projector -> visual input embeddings -> causal LLM, with heads.

Sequence layout: [visual tokens][caption tokens]. Hidden state at visual position i is what the
generation heads read to predict visual token i + 1 (semantics or pixels); text positions predict
the next word.
"""

from __future__ import annotations

import copy
import pickle

import torch
from torch import nn

from study.config import RunConfig
from study.data.tokenizer import VOCAB, max_caption_tokens
from study.errors import UserError
from study.model.diffloss import DiffusionHead
from study.model.layers import init_weights
from study.model.llm import DecoderLM
from study.model.vit import VisionEncoder


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


class UnifiedModel(nn.Module):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        m, o = cfg.model, cfg.objective
        self.visual_attention = m.visual_attention
        self.encoder = VisionEncoder(cfg.data.image_size, m.patch_size, m.enc_width, m.enc_depth, m.heads,
                                     m.mlp_ratio, m.attention)
        self.num_visual = self.encoder.num_tokens
        self.patch_dim = m.patch_size * m.patch_size * 3
        self.projector = mlp(m.enc_width, m.width, m.width)
        self.mask_embedding = nn.Parameter(torch.zeros(m.width))
        max_len = self.num_visual + max_caption_tokens(cfg.data.max_objects)
        self.llm = DecoderLM(len(VOCAB), m.width, m.depth, m.heads, m.mlp_ratio, max_len, m.attention)
        parts = o.parts()
        self.semantic_target = next((p for p in parts if p.startswith("semantic")), None)
        self.semantic_head = None
        if self.semantic_target:
            dim = m.width if self.semantic_target == "semantic_input" else m.enc_width
            self.semantic_head = mlp(m.width, m.width, dim)
        init_weights(self)
        nn.init.normal_(self.mask_embedding, std=0.02)
        self.pixel_head: nn.Module | None = None
        if "pixel" in parts:
            self.pixel_head = (DiffusionHead(self.patch_dim, m.width, o.diffusion_width, o.diffusion_depth,
                                             o.diffusion_timesteps)
                               if o.pixel_head == "diffusion" else mlp(m.width, m.width, self.patch_dim))
        self.ema_projector = None
        if self.semantic_target == "semantic_input" and o.target_ema > 0:
            self.ema_projector = copy.deepcopy(self.projector).requires_grad_(False)
        if m.encoder_checkpoint:
            self.encoder.load_state_dict(load_encoder_weights(m.encoder_checkpoint))
        if m.freeze_encoder:
            self.encoder.requires_grad_(False)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Vision-encoder outputs (B, V, enc_width) and LLM input embeddings (B, V, width)."""
        enc = self.encoder(images)
        return enc, self.projector(enc)

    def mask_inputs(self, embeds: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return embeds
        return torch.where(mask[..., None], self.mask_embedding.to(embeds.dtype), embeds)

    def forward(self, visual_embeds: torch.Tensor, tokens: torch.Tensor,
                keep_layers: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = torch.cat([visual_embeds, self.llm.tok_embed(tokens).to(visual_embeds.dtype)], dim=1)
        return self.llm(x, visual_embeds.shape[1], self.visual_attention, keep_layers)

    def text_logits(self, hidden: torch.Tensor, num_visual: int) -> torch.Tensor:
        return self.llm.lm_head(hidden[:, num_visual:])

    def semantic_targets(self, enc: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """What the semantic head regresses, detached: input embeddings (maybe via EMA) or encoder outputs."""
        if self.semantic_target == "semantic_encoder":
            return enc.detach()
        if self.ema_projector is not None:
            with torch.no_grad():
                return self.ema_projector(enc.detach())
        return embeds.detach()

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        if self.ema_projector is not None:
            for ema, live in zip(self.ema_projector.parameters(), self.projector.parameters(), strict=True):
                ema.lerp_(live, 1 - decay)


def load_encoder_weights(path: str) -> dict[str, torch.Tensor]:
    """An encoder state dict from a run checkpoint ('model' with 'encoder.' keys) or a bare state dict."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as e:
        raise UserError(f"config key 'model.encoder_checkpoint': cannot load '{path}': {e.__class__.__name__}") \
            from None
    state = state.get("model", state)
    if any(k.startswith("encoder.") for k in state):
        state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    return state
