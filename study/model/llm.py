"""A causal decoder-only LLM (RMSNorm, RoPE, SwiGLU, SDPA) fed with input embeddings."""

from __future__ import annotations

import torch
from torch import nn

from study.model.layers import Block, KVCache, LayerCache, RMSNorm, rope_tables


def attention_mask(num_visual: int, length: int, visual_attention: str,
                   device: torch.device) -> torch.Tensor | None:
    """Boolean (T, T) mask, True where allowed; None means plain causal attention."""
    if visual_attention == "causal":
        return None
    allowed = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    allowed[:num_visual, :num_visual] = True  # bidirectional inside the image; text stays causal
    return allowed


class DecoderLM(nn.Module):
    """The from-scratch decoder LLM: tied embeddings, pre-norm blocks, rotary positions."""

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

    @property
    def max_positions(self) -> int:
        """The longest sequence (visual and text positions) the rotary tables cover."""
        return self.rope_cos.shape[0]

    def forward(self, x: torch.Tensor, num_visual: int, visual_attention: str, keep_layers: bool = False,
                cache: KVCache | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final normed hidden states (B, T, D) and, if asked, every block's output. With a `cache`, the first call
        feeds the prompt and each later one a single new position, which attends to everything before it."""
        start, t = (cache.length if cache else 0), x.shape[1]
        if start and t != 1:
            raise ValueError("a cached decoding step feeds one position at a time")
        mask = attention_mask(num_visual, t, visual_attention, x.device) if not start else None
        rope = (self.rope_cos[start:start + t], self.rope_sin[start:start + t])
        if cache is not None:
            cache.layers = cache.layers or [LayerCache() for _ in self.blocks]
            cache.length += t
        layers = []
        for i, block in enumerate(self.blocks):
            x = block(x, mask=mask, causal=mask is None and not start, rope=rope,
                      cache=None if cache is None else cache.layers[i])
            if keep_layers:
                layers.append(x)
        return self.norm(x), layers
