"""Encoder pretraining objectives, each a module whose forward returns its losses.

- `ContrastiveObjective` (SigLIP-style): a text tower over the full caption and the ViT, each mean-pooled and
  projected; the pairwise sigmoid loss -mean_ij log sigmoid(z_ij (t x_i . y_j + b)), z_ij = 1 on the diagonal
  and -1 elsewhere, with learned temperature t (log-parametrised, init 10) and bias b (init -10).
- `SelfDistillObjective` (masked-feature prediction, data2vec/iBOT-style, no captions): a student ViT sees the
  image with a random share of its patches blanked; a predictor maps its tokens to the features of an EMA
  teacher that sees the whole image (teacher tokens normalised per token, no affine); the loss is the mean
  squared error at the blanked tokens. The EMA teacher and the normalised targets keep the trivial constant
  solution away.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from study.config import RunConfig
from study.data.tokenizer import PAD_ID, VOCAB, max_caption_tokens
from study.model.layers import Block, RMSNorm, init_weights
from study.model.vit import VisionEncoder

EMBED_DIM = 64
TEACHER_DECAY = 0.996
MASK_RATIO = 0.5


def vision_encoder(cfg: RunConfig) -> VisionEncoder:
    """The ViT the config describes."""
    m = cfg.model
    return VisionEncoder(cfg.data.image_size, m.patch_size, m.enc_width, m.enc_depth, m.heads, m.mlp_ratio,
                         m.attention)


class TextTower(nn.Module):
    """A small bidirectional transformer over caption tokens, mean-pooled over non-pad positions."""

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float, max_len: int):
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), width)
        self.pos = nn.Parameter(torch.randn(1, max_len, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = RMSNorm(width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        keep = tokens != PAD_ID
        x = self.embed(tokens) + self.pos[:, : tokens.shape[1]]
        allowed = (keep[:, None, None, :]).expand(-1, 1, tokens.shape[1], -1)
        for block in self.blocks:
            x = block(x, mask=allowed)
        x = self.norm(x)
        return (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)


def sigmoid_pair_loss(image: torch.Tensor, text: torch.Tensor, log_t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """SigLIP's loss for L2-normalised (N, E) image and text embeddings, averaged over the N images."""
    logits = image @ text.T * log_t.exp() + bias
    labels = 2 * torch.eye(len(image), device=image.device) - 1
    return -F.logsigmoid(labels * logits).sum() / len(image)


class ContrastiveObjective(nn.Module):
    """Sigmoid image-text contrastive pretraining of a vision encoder (SigLIP's loss)."""

    def __init__(self, cfg: RunConfig):
        super().__init__()
        m = cfg.model
        self.encoder = vision_encoder(cfg)
        self.text = TextTower(m.enc_width, m.enc_depth, m.heads, m.mlp_ratio, max_caption_tokens(cfg.data.max_objects))
        self.image_proj = nn.Linear(m.enc_width, EMBED_DIM)
        self.text_proj = nn.Linear(m.enc_width, EMBED_DIM)
        init_weights(self)
        self.log_t = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.tensor(-10.0))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator | None) -> dict:
        image = F.normalize(self.image_proj(self.encoder(images).mean(1)), dim=-1)
        text = F.normalize(self.text_proj(self.text(tokens)), dim=-1)
        loss = sigmoid_pair_loss(image.float(), text.float(), self.log_t, self.bias)
        with torch.no_grad():
            hits = (image @ text.T).argmax(1) == torch.arange(len(image), device=image.device)
        return {"contrastive": loss, "total": loss, "retrieval_acc": hits.float().mean()}


def blank_patches(images: torch.Tensor, patch: int, mask: torch.Tensor) -> torch.Tensor:
    """Images with the patches where `mask` (B, V) is True set to mid-grey."""
    b, _, h, w = images.shape
    side = w // patch
    grid = mask.reshape(b, h // patch, side).repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    return torch.where(grid[:, None], torch.full_like(images, 0.5), images)


class SelfDistillObjective(nn.Module):
    """Masked-feature self-distillation of a vision encoder from its EMA teacher, without captions."""

    def __init__(self, cfg: RunConfig):
        super().__init__()
        m = cfg.model
        self.patch = m.patch_size
        self.encoder = vision_encoder(cfg)
        self.predictor = nn.Sequential(nn.Linear(m.enc_width, m.enc_width), nn.GELU(),
                                       nn.Linear(m.enc_width, m.enc_width))
        init_weights(self)
        self.teacher = copy.deepcopy(self.encoder).requires_grad_(False)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator | None) -> dict:
        b, v = images.shape[0], self.encoder.num_tokens
        mask = torch.rand(b, v, generator=generator) < MASK_RATIO
        with torch.no_grad():
            target = F.layer_norm(self.teacher(images).float(), (self.teacher.norm.weight.shape[0],))
        pred = self.predictor(self.encoder(blank_patches(images, self.patch, mask))).float()
        loss = (pred - target).pow(2).mean(-1)[mask].mean()
        return {"feature_prediction": loss, "total": loss}

    @torch.no_grad()
    def after_step(self) -> None:
        for t, s in zip(self.teacher.parameters(), self.encoder.parameters(), strict=True):
            t.lerp_(s, 1 - TEACHER_DECAY)


def build_objective(cfg: RunConfig) -> nn.Module:
    """The encoder-pretraining objective the config names (contrastive or self_distill)."""
    return {"contrastive": ContrastiveObjective, "self_distill": SelfDistillObjective}[cfg.objective.task](cfg)
