"""Per-token diffusion head (MAR-style): an MLP with AdaLN, conditioned on a hidden state.

Trained with DDPM noise prediction on a cosine schedule; sampled with deterministic DDIM steps,
so the number of sampling steps is an inference-compute knob.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of diffusion timesteps, `dim` wide."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class AdaLNBlock(nn.Module):
    """A residual MLP block modulated (shift, scale, gate) by the conditioning vector."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(c).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class DiffusionHead(nn.Module):
    """The per-token diffusion head (MAR): denoises each target token conditioned on a hidden state."""

    def __init__(self, target_dim: int, cond_dim: int, width: int, depth: int, timesteps: int,
                 clip: float | None = None):
        super().__init__()
        self.timesteps, self.clip = timesteps, clip  # clip: bound of the targets' values (None: no clipping)
        self.input = nn.Linear(target_dim, width)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.cond = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(AdaLNBlock(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.output = nn.Linear(width, target_dim)
        s = 0.008  # cosine schedule (Nichol & Dhariwal)
        f = torch.cos((torch.arange(timesteps + 1) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
        self.register_buffer("alpha_bar", (f[1:] / f[0]).clamp(min=1e-5), persistent=False)

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = self.time_mlp(timestep_embedding(t, self.input.out_features)) + self.cond(cond)
        h = self.input(x_t)
        for block in self.blocks:
            h = block(h, c)
        return self.output(self.final_norm(h))

    def draw(self, rows: int, generator: torch.Generator | None,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The random part of the loss for `rows` noised rows: timesteps (rows,) and noise (rows, target_dim).
        Drawn apart from `loss`, so the loss itself is one traceable graph (no generator inside)."""
        t = torch.randint(0, self.timesteps, (rows,), generator=generator, device=device)
        return t, torch.randn((rows, self.output.out_features), generator=generator, device=device)

    def loss(self, target: torch.Tensor, cond: torch.Tensor, batch_mul: int,
             draws: tuple[torch.Tensor, torch.Tensor], weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean noise-prediction MSE; each (target, cond) row gets `batch_mul` noised copies, `draws` their timesteps
        and noise (`draw(batch_mul * N)`). With `weights` (N,), the mean over the rows of weight 1 (0 without any)."""
        target, cond = target.repeat(batch_mul, 1), cond.repeat(batch_mul, 1)
        t, noise = draws[0], draws[1].to(target.dtype)
        a = self.alpha_bar[t][:, None].to(target.dtype)
        x_t = a.sqrt() * target + (1 - a).sqrt() * noise
        pred = self.predict_noise(x_t, t, cond).float()
        if weights is None:
            return F.mse_loss(pred, noise.float())
        per_row = (pred - noise.float()).pow(2).mean(-1)
        weights = weights.repeat(batch_mul)
        return (per_row * weights).sum() / weights.sum().clamp(min=1)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
        """Deterministic DDIM from Gaussian noise in `steps` steps; each step's estimate of the clean target is
        clipped to the targets' bound when they have one (pixels in [-1, 1])."""
        dim = self.output.out_features
        start = generator.device if generator is not None else cond.device  # a CPU generator serves any device
        x = torch.randn((cond.shape[0], dim), generator=generator, device=start).to(cond.device)
        ts = torch.linspace(self.timesteps - 1, 0, steps, device=cond.device).round().long()
        for i, t in enumerate(ts):
            a = self.alpha_bar[t]
            eps = self.predict_noise(x, t.expand(x.shape[0]), cond).float()
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            if self.clip is not None:  # at high noise x0 = (x - ...) / sqrt(a) amplifies the error of eps
                x0 = x0.clamp(-self.clip, self.clip)
                eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            a_next = self.alpha_bar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, device=x.device)
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return x
