"""R*_D by the two-stage fit (analysis/repetition.py): the base law from one-epoch runs, then R*_D from runs that
repeat their data, recovered from runs drawn from the data-constrained law with a known R*_D."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from analysis.laws import repeated_data
from analysis.repetition import distinct_resamples, has_repetition_design, two_stage
from analysis.runs import SAMPLES, SEED, D

LAW = {"B": 40.0, "beta": 0.35, "E": 0.5, "R_D": 6.0}
SEEN = 160_000


def _runs(seeds: int = 3) -> pl.DataFrame:
    """Noise-free runs of the law: every seed alike."""
    rows = []
    for seed in range(seeds):
        for d in (1_000, 3_000, 10_000, 30_000, 100_000):
            for s in (d, SEEN):
                loss = LAW["E"] + LAW["B"] / repeated_data(LAW, np.array([s]), np.array([d]))[0] ** LAW["beta"]
                rows.append({SEED: seed, D: d, SAMPLES: s, "caption_loss": loss})
    return pl.DataFrame(rows)


def test_two_stage_recovers_a_known_r_star_and_the_base_law():
    runs = _runs()
    assert has_repetition_design(runs)
    r_star, law = two_stage(runs.filter(pl.col(SAMPLES) == pl.col(D)), runs.filter(pl.col(SAMPLES) > pl.col(D)),
                            "caption_loss")
    assert r_star == pytest.approx(LAW["R_D"], rel=0.05)
    assert law["beta"] == pytest.approx(LAW["beta"], rel=0.05) and law["E"] == pytest.approx(LAW["E"], rel=0.05)


def test_a_design_without_repeated_runs_or_scales_is_not_a_repetition_design():
    runs = _runs()
    assert not has_repetition_design(runs.filter(pl.col(SAMPLES) == pl.col(D)))
    assert not has_repetition_design(runs.filter(pl.col(D) <= 3_000))
    assert distinct_resamples(5) == 126  # the multisets a bootstrap of 5 seeds can draw
