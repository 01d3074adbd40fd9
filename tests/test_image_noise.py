"""The image-sampling noise of a paired zs_norm difference, from the per-question outcomes a final evaluation writes:
none when two runs answer every question alike, and for independent answers the binomial noise of the images."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.image_noise import CHANCE, image_noise, zs_norm
from study.evaluate import ANSWERS


def write(run, right, images, attributes):
    run.mkdir(parents=True)
    np.savez_compressed(run / ANSWERS, image=images, attribute=attributes, right=right)
    return run


def test_noise_is_zero_for_equal_answers_and_binomial_for_independent_ones(tmp_path):
    rng = np.random.default_rng(0)
    images = np.repeat(np.arange(400), 4)  # each image asked about each attribute once
    attributes = np.tile(np.array(list(CHANCE)), 400)
    a = rng.random(1600) < 0.8
    same = [(write(tmp_path / f"a{i}", a, images, attributes), write(tmp_path / f"b{i}", a, images, attributes))
            for i in range(2)]
    assert image_noise(same, resamples=200) == 0.0
    b = rng.random(1600) < 0.8  # another run, answering independently
    pair = [(tmp_path / "a0", write(tmp_path / "c", b, images, attributes))]
    noise = image_noise(pair, resamples=400)
    # binomial: each attribute's accuracy difference has variance 2 p (1 - p) / 400 for independent answers
    expected = np.sqrt(sum(2 * 0.8 * 0.2 / 400 / (1 - c) ** 2 for c in CHANCE.values())) / 4
    assert noise == pytest.approx(expected, rel=0.15)
    weights = np.ones(400)
    assert zs_norm({"image": images, "attribute": attributes, "right": np.ones(1600, bool)}, weights) == 1.0
    assert image_noise([(tmp_path / "a0", tmp_path / "missing")]) is None
