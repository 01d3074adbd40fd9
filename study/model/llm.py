"""A causal decoder-only LLM (RMSNorm, RoPE, SwiGLU, SDPA) fed with input embeddings."""

from __future__ import annotations

import torch
from torch import nn

from study.model.layers import Block, RMSNorm, rope_tables


def attention_mask(num_visual: int, length: int, visual_attention: str,
                   device: torch.device) -> torch.Tensor | None:
    """Boolean (T, T) mask, True where allowed; None means plain causal attention."""
    if visual_attention == "causal":
        return None
    allowed = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    allowed[:num_visual, :num_visual] = True  # bidirectional inside the image; text stays causal
    return allowed


class DecoderLM(nn.Module):
    def __init__(self, vocab: int, width: int, depth: int, heads: int, mlp_ratio: float, max_len: int,
                 kernel: str = "sdpa"):
        super().__init__()
        self.tok_embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, kernel) for _ in range(depth))
        self.norm = RMSNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.tok_embed.weight  # tied, as in nanoGPT
        cos, sin = rope_tables(max_len, width // heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, x: torch.Tensor, num_visual: int, visual_attention: str,
                keep_layers: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final normed hidden states (B, T, D) and, if asked, every block's output."""
        mask = attention_mask(num_visual, x.shape[1], visual_attention, x.device)
        rope = (self.rope_cos, self.rope_sin)
        layers = []
        for block in self.blocks:
            x = block(x, mask=mask, causal=mask is None, rope=rope)
            if keep_layers:
                layers.append(x)
        return self.norm(x), layers
