"""How much of a paired difference's spread is the noise of the held-out images scored, not of training: the paired
`zs_norm` difference of a comparison recomputed on bootstrap resamples of the images (the same resample for every
run, since all runs answer the same questions), from the per-question outcomes each final evaluation writes
(`zero_shot_answers.npz`). Its standard deviation is the image-sampling noise of the mean paired difference, to be
read beside the seed-to-seed standard error (the paired sd over sqrt(n))."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from study.evaluation.zero_shot import ATTRIBUTES

ANSWERS = "zero_shot_answers.npz"
CHANCE = {attribute: 1 / len(values) for attribute, values in ATTRIBUTES.items()}


def read_answers(run_dir: Path) -> dict[str, np.ndarray] | None:
    """A run's per-question zero-shot answers (image, attribute, right), or None when it wrote none."""
    path = Path(run_dir) / ANSWERS
    if not path.is_file():
        return None
    with np.load(path) as f:
        return {k: f[k] for k in ("image", "attribute", "right")}


def zs_norm(answers: dict[str, np.ndarray], weights: np.ndarray) -> float:
    """Chance-normalised accuracy with each image counted `weights[image]` times (a bootstrap resample)."""
    w = weights[answers["image"]]
    parts = []
    for attribute, chance in CHANCE.items():
        sel = answers["attribute"] == attribute
        accuracy = float((answers["right"][sel] * w[sel]).sum() / max(w[sel].sum(), 1e-12))
        parts.append((accuracy - chance) / (1 - chance))
    return float(np.mean(parts))


def image_noise(pairs: list[tuple[Path, Path]], resamples: int = 1000, seed: int = 0) -> float | None:
    """The standard deviation, over bootstrap resamples of the held-out images, of the mean paired zs_norm difference
    (arm minus baseline) of `pairs` of run directories; None when a run has no answers or the runs' images differ."""
    loaded = [(read_answers(a), read_answers(b)) for a, b in pairs]
    if not loaded or any(a is None or b is None for a, b in loaded):
        return None
    images = int(max(max(a["image"].max(), b["image"].max()) for a, b in loaded)) + 1
    if any(not np.array_equal(a["image"], b["image"]) for a, b in loaded):
        return None
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(resamples):
        weights = np.bincount(rng.integers(0, images, images), minlength=images).astype(float)
        means.append(np.mean([zs_norm(a, weights) - zs_norm(b, weights) for a, b in loaded]))
    return float(np.std(means, ddof=1))
