"""Transformer building blocks shared by the vision encoder and the LLM: RMSNorm, RoPE, SwiGLU, attention.

Attention kernels (`model.attention`): `sdpa` (torch's scaled_dot_product_attention), `xformers`
(memory-efficient attention; CUDA only) and `reference` (plain softmax attention, for testing the others).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import UserError


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned scale."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)  # same dtype: fused kernel


def rope_tables(seq_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (seq_len, head_dim / 2) for rotary position embeddings."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x1, x2) of the last dim; x is (B, heads, T, head_dim)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos[: x.shape[-2]], sin[: x.shape[-2]]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        mask: torch.Tensor | None) -> torch.Tensor:
    """Plain softmax attention; `mask` is boolean, True where attending is allowed."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


def xformers_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                       causal: bool) -> torch.Tensor:
    """xformers' memory-efficient attention on SDPA's (B, heads, T, head_dim) layout, same mask semantics."""
    import xformers.ops as xops

    bias = xops.LowerTriangularMask() if causal else None if mask is None else additive_bias(mask, q)
    out = xops.memory_efficient_attention(*(x.transpose(1, 2) for x in (q, k, v)), attn_bias=bias)
    return out.transpose(1, 2)


def additive_bias(mask: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, T) bias of q's dtype: 0 where `mask` allows, -inf elsewhere; rows padded to a multiple
    of 8 elements in memory, as xformers requires of a bias tensor."""
    b, h, t, _ = q.shape
    n = mask.shape[-1]
    bias = q.new_zeros(b, h, t, -(-n // 8) * 8)[..., :n]
    return bias.masked_fill_(~mask, float("-inf"))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool,
              kernel: str) -> torch.Tensor:
    """Softmax attention by `kernel`: `mask` is boolean (True where allowed); `causal` with no mask is
    plain causal attention; neither is full attention."""
    if kernel == "xformers":
        return xformers_attention(q, k, v, mask, causal)
    if kernel == "reference":
        if causal:
            mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        return reference_attention(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)


def xformers_problem(device: torch.device) -> str | None:
    """Why xformers attention cannot run on `device`, or None when it can."""
    if importlib.util.find_spec("xformers") is None:
        return "xformers is not installed"
    if device.type != "cuda":
        return f"xformers has no kernels for device {device.type}"
    return None


def check_attention_kernel(kernel: str, device: torch.device) -> None:
    """A one-line UserError when the `model.attention` kernel cannot run on `device`."""
    problem = xformers_problem(device) if kernel == "xformers" else None
    if problem:
        raise UserError(f"config key 'model.attention': xformers cannot run here ({problem}); use sdpa or reference")


@dataclass
class LayerCache:
    """One attention layer's keys and values (B, heads, T, head_dim) of the positions fed so far."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k is not None:
            k, v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        self.k, self.v = k, v
        return k, v


@dataclass
class KVCache:
    """A decoding cache: the miniature LM's per-layer keys and values, or a transformers model's cache object."""

    layers: list[LayerCache] = field(default_factory=list)
    hf: object = None
    length: int = 0


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions, an optional KV cache and a choice of kernel."""

    def __init__(self, dim: int, heads: int, kernel: str = "sdpa"):
        super().__init__()
        self.heads, self.kernel = heads, kernel
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool,
                rope: tuple[torch.Tensor, torch.Tensor] | None, cache: LayerCache | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.extend(k, v)
        y = attention(q, k, v, mask, causal, self.kernel)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    """The gated SiLU feed-forward layer."""

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = int(dim * ratio)
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, kernel: str = "sdpa"):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        self.attn = Attention(dim, heads, kernel)
        self.mlp = SwiGLU(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None, cache: LayerCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask, causal, rope, cache)
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Normal(0, std) init of every linear and embedding weight, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
