"""The random draws of a training step, made for the global batch and sliced, so that a run draws the same numbers
at any number of ranks and micro-batches (and a run resumed on another number draws on as if it had not stopped).

A step's draws are a function of (seed, step) alone: the visual-token mask first, then the diffusion head's
timesteps and noise for every generation position of every sample, `diffusion_batch_mul` times. On the CPU both
come from one generator (as one-process runs always drew them); on a GPU the diffusion draws come from a generator
of the device, keyed by the step, so they never leave it. A shard of rows [lo, hi) of the global batch takes its
rows of each draw; no draw is ever keyed by a rank or a micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from study.config import RunConfig
from study.masking import sample_mask
from study.model.unified import UnifiedModel

DIFFUSION_STREAM = 1  # the device generator's stream of a step's diffusion draws (GPU)


def step_generator(seed: int, step: int, stream: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of one step's draws (stream 0: on the CPU)."""
    return torch.Generator(device).manual_seed((seed * 1_000_003 + step) * 7 + stream)


@dataclass
class Draws:
    """Draws for `rows` samples: the mask (rows, V) or None, and the diffusion head's (timesteps, noise), whose rows
    are `batch_mul` consecutive blocks of rows x (V - 1) generation positions, or None."""

    rows: int
    mask: torch.Tensor | None
    diffusion: tuple[torch.Tensor, torch.Tensor] | None
    batch_mul: int = 1

    def slice(self, lo: int, hi: int) -> Draws:
        """The draws of samples [lo, hi) of these rows."""
        mask = None if self.mask is None else self.mask[lo:hi]
        if self.diffusion is None:
            return Draws(hi - lo, mask, None, self.batch_mul)
        per_sample = self.diffusion[0].shape[0] // (self.batch_mul * self.rows)
        block = self.rows * per_sample
        picks = [slice(m * block + lo * per_sample, m * block + hi * per_sample) for m in range(self.batch_mul)]
        t, noise = (torch.cat([x[p] for p in picks]) for x in self.diffusion)
        return Draws(hi - lo, mask, (t, noise), self.batch_mul)

    def to(self, device: torch.device) -> Draws:
        mask = None if self.mask is None else self.mask.to(device, non_blocking=True)
        diffusion = None if self.diffusion is None else tuple(x.to(device, non_blocking=True) for x in self.diffusion)
        return Draws(self.rows, mask, diffusion, self.batch_mul)


def diffusion_draws(model: UnifiedModel, cfg: RunConfig, rows: int, generator: torch.Generator | None,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The diffusion head's timesteps and noise for `rows` samples (every generation position, diffusion_batch_mul
    times, batch_mul-major); None without a diffusion head."""
    if model.pixel_head is None or cfg.objective.pixel_head != "diffusion":
        return None
    return model.pixel_head.draw(cfg.objective.diffusion_batch_mul * rows * (model.num_visual - 1), generator, device)


def step_draws(model: UnifiedModel, cfg: RunConfig, step: int, device: torch.device) -> Draws:
    """Every draw of training step `step`, for the whole global batch."""
    gen = step_generator(cfg.train.seed, step)
    rows = cfg.train.batch_size
    mask = sample_mask(cfg.masking, rows, model.num_visual, gen)
    noise = gen if device.type == "cpu" else step_generator(cfg.train.seed, step, DIFFUSION_STREAM, device)
    return Draws(rows, mask, diffusion_draws(model, cfg, rows, noise, device), cfg.objective.diffusion_batch_mul)
