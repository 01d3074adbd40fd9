"""Masking of visual input embeddings, with the masking probability drawn from a distribution.

Each sample (or the whole batch) draws a probability p; round(p * V) of its V visual tokens, chosen
uniformly, are replaced by the learned mask embedding, so next-token generation cannot just copy
its input. MAR's sampler is `truncnorm` with mean 1.0, std 0.25 on [0.7, 1.0], per batch.
"""

from __future__ import annotations

import torch

from study.config import MaskingConfig


def _truncated_normal(n: int, mean: float, std: float, low: float, high: float,
                      generator: torch.Generator | None) -> torch.Tensor:
    """Inverse-CDF sampling of N(mean, std) restricted to [low, high]."""
    normal = torch.distributions.Normal(torch.tensor(mean, dtype=torch.float64),
                                        torch.tensor(std, dtype=torch.float64), validate_args=False)  # no host reads
    lo, hi = normal.cdf(torch.tensor(low, dtype=torch.float64)), normal.cdf(torch.tensor(high, dtype=torch.float64))
    u = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    return normal.icdf(u.clamp(1e-12, 1 - 1e-12)).clamp(low, high)


def draw_probabilities(cfg: MaskingConfig, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n masking probabilities (float64) from the configured distribution."""
    if cfg.distribution == "none":
        return torch.zeros(n, dtype=torch.float64)
    if cfg.distribution == "fixed":
        return torch.full((n,), cfg.p, dtype=torch.float64)
    if cfg.distribution == "uniform":
        return cfg.low + (cfg.high - cfg.low) * torch.rand(n, generator=generator, dtype=torch.float64)
    if cfg.distribution == "gaussian":
        draws = cfg.mean + cfg.std * torch.randn(n, generator=generator, dtype=torch.float64)
        return draws.clamp(0.0, 1.0)
    return _truncated_normal(n, cfg.mean, cfg.std, cfg.low, cfg.high, generator)


def random_mask(probs: torch.Tensor, num_tokens: int, generator: torch.Generator | None) -> torch.Tensor:
    """Boolean (B, V): row b masks round(probs[b] * V) tokens chosen uniformly at random."""
    counts = (probs * num_tokens).round().long()
    ranks = torch.rand(len(probs), num_tokens, generator=generator).argsort(dim=1).argsort(dim=1)
    return ranks < counts[:, None]


def sample_mask(cfg: MaskingConfig, batch: int, num_tokens: int,
                generator: torch.Generator | None) -> torch.Tensor | None:
    """The training mask for one batch, or None when masking is off."""
    if cfg.distribution == "none":
        return None
    probs = draw_probabilities(cfg, 1 if cfg.per == "batch" else batch, generator)
    return random_mask(probs.expand(batch), num_tokens, generator)
