"""A small ViT over image patches: the semantic vision encoder of the miniature model."""

from __future__ import annotations

import torch
from torch import nn

from study.model.layers import Block, RMSNorm


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, p * p * C), patches in raster order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: torch.Tensor, patch: int, channels: int = 3) -> torch.Tensor:
    """Inverse of `patchify` for square images."""
    b, n, _ = patches.shape
    side = int(round(n ** 0.5))
    x = patches.reshape(b, side, side, patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, side * patch, side * patch)


class VisionEncoder(nn.Module):
    """The from-scratch ViT over image patches."""

    def __init__(self, image_size: int, patch: int, width: int, depth: int, heads: int, mlp_ratio: float,
                 kernel: str = "sdpa"):
        super().__init__()
        self.patch = patch
        self.num_tokens = (image_size // patch) ** 2
        self.patch_embed = nn.Linear(patch * patch * 3, width)
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_tokens, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, kernel) for _ in range(depth))
        self.norm = RMSNorm(width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(patchify(images * 2 - 1, self.patch)) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
