import numpy as np
import pytest
import torch
from scipy import stats

from study.config import MaskingConfig
from study.masking import draw_probabilities, random_mask, sample_mask

N = 4000


def _draw(**kw):
    return draw_probabilities(MaskingConfig(**kw), N, torch.Generator().manual_seed(0)).numpy()


@pytest.mark.parametrize(("kw", "dist"), [
    (dict(distribution="uniform", low=0.2, high=0.9), stats.uniform(0.2, 0.7)),
    (dict(distribution="gaussian", mean=0.5, std=0.12), stats.norm(0.5, 0.12)),
    (dict(distribution="truncnorm", mean=1.0, std=0.25, low=0.7, high=1.0),
     stats.truncnorm((0.7 - 1.0) / 0.25, 0.0, loc=1.0, scale=0.25)),
    (dict(distribution="truncnorm", mean=0.4, std=0.3, low=0.1, high=0.8),
     stats.truncnorm((0.1 - 0.4) / 0.3, (0.8 - 0.4) / 0.3, loc=0.4, scale=0.3)),
])
def test_probabilities_follow_the_configured_distribution(kw, dist):
    draws = _draw(**kw)
    assert stats.kstest(draws, dist.cdf).pvalue > 0.01
    # and a wrong distribution is rejected, so the test has power
    assert stats.kstest(draws, stats.uniform(0, 1).cdf).pvalue < 1e-6


def test_gaussian_is_clipped_to_unit_interval():
    draws = _draw(distribution="gaussian", mean=0.9, std=0.3)
    assert draws.min() >= 0 and draws.max() <= 1
    assert np.isclose((draws == 1.0).mean(), stats.norm(0.9, 0.3).sf(1.0), atol=0.03)


def test_fixed_and_none():
    assert np.all(_draw(distribution="fixed", p=0.3) == 0.3)
    assert sample_mask(MaskingConfig(distribution="none"), 4, 16, None) is None


def test_mask_counts_match_probabilities():
    probs = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    mask = random_mask(probs, 16, torch.Generator().manual_seed(1))
    assert mask.sum(1).tolist() == [0, 4, 8, 16]


def test_per_batch_shares_one_probability_per_sample_does_not():
    gen = torch.Generator().manual_seed(2)
    cfg = MaskingConfig(distribution="uniform", low=0.0, high=1.0, per="batch")
    counts = sample_mask(cfg, 32, 64, gen).sum(1)
    assert counts.unique().numel() == 1
    cfg.per = "sample"
    assert sample_mask(cfg, 32, 64, gen).sum(1).unique().numel() > 5


def test_masked_positions_are_uniform():
    gen = torch.Generator().manual_seed(3)
    mask = random_mask(torch.full((20000,), 0.25, dtype=torch.float64), 8, gen)
    per_position = mask.float().mean(0).numpy()
    assert np.allclose(per_position, 0.25, atol=0.015)
