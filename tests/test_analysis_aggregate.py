"""Seed statistics and paired comparisons on synthetic run tables with a known effect."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from analysis.aggregate import (
    SAME_RUNS,
    compare,
    compare_to_baselines,
    curve_stats,
    judge,
    judge_adjusted,
    matched_baseline,
    paired_values,
    seed_stats,
    values_at,
)
from analysis.runs import CURVE_SCHEMA, SEED, D, describe_arms


def _runs(effect: float, seeds: int = 8, scales: tuple[int, ...] = (100, 1000), noise: float = 0.01) -> pl.DataFrame:
    """Two arms (target none / semantic_input) x scales x seeds; a shared per-seed offset that pairing
    cancels, and `effect` added to the semantic arm."""
    rng = np.random.default_rng(0)
    rows = []
    for d in scales:
        for seed in range(seeds):
            offset = rng.normal(0, 0.05)  # seed-to-seed variation common to both arms
            for target, delta in (("none", 0.0), ("semantic_input", effect)):
                acc = 0.5 + offset + delta + rng.normal(0, noise)
                rows.append({"run_id": f"{target}-{d}-{seed}", "arm": target, "objective.target": target,
                             "train.lr": 0.001, D: d, SEED: seed, "zs_acc": acc})
    return pl.DataFrame(rows)


def test_seed_stats_per_arm_and_scale():
    runs = _runs(0.03, seeds=5).with_columns(pl.when(pl.col(SEED) == 0).then(None).otherwise(pl.col("zs_acc"))
                                             .alias("zs_acc"))  # a missing value is left out
    stats = seed_stats(runs, "zs_acc")
    assert stats.columns == ["arm", D, "metric", "n", "mean", "std", "lo", "hi", "seeds"]
    assert len(stats) == 4 and stats["n"].to_list() == [4] * 4 and stats["seeds"][0] == "1 2 3 4"
    row = stats.row(0, named=True)
    values = runs.filter((pl.col("arm") == row["arm"]) & (pl.col(D) == row[D]))["zs_acc"].drop_nulls()
    assert row["mean"] == pytest.approx(values.mean()) and row["std"] == pytest.approx(values.std())
    assert row["lo"] < row["mean"] < row["hi"]
    assert seed_stats(runs, "no_such_metric").is_empty()


def test_paired_comparison_recovers_a_known_effect():
    runs = _runs(0.03)
    row = compare(runs, "zs_acc", "semantic_input", "none", ("objective.target",), direction=+1)
    assert row["n"] == 16  # 2 scales x 8 seeds
    assert row["diff"] == pytest.approx(0.03, abs=0.01)
    assert row["lo"] > 0 and row["p_value"] < 0.01 and row["verdict"] == "reproduced"
    # the unpaired seed offsets (std 0.05) would swamp a 0.03 effect; pairing removes them
    pairs = paired_values(runs, "zs_acc", "semantic_input", "none", ("objective.target",))
    assert (pairs["a"] - pairs["b"]).std() < 0.03
    assert compare(runs, "zs_acc", "semantic_input", "none", ("objective.target",), direction=-1)["verdict"] == \
        "not reproduced"


def test_no_effect_is_inconclusive_and_few_pairs_never_decide():
    assert compare(_runs(0.0), "zs_acc", "semantic_input", "none", ("objective.target",), +1)["verdict"] == \
        "inconclusive at this scale"
    two = _runs(0.2, seeds=1)  # two pairs, a large effect: still no verdict
    row = compare(two, "zs_acc", "semantic_input", "none", ("objective.target",), +1)
    assert row["n"] == 2 and row["verdict"] == "inconclusive: too few pairs (2 of 3 needed)"
    assert judge_adjusted(0.2, 0.001, 2, +1) == "inconclusive: too few pairs (2 of 3 needed)"
    assert judge_adjusted(0.2, 0.001, 3, +1) == "reproduced"
    assert judge(0.1, 0.2, 3, 0) == "no claim"


def test_runs_pair_only_when_they_differ_in_the_treatment():
    runs = _runs(0.03, seeds=3)
    other_lr = runs.filter(pl.col("arm") == "none").with_columns(pl.lit(0.01).alias("train.lr"),
                                                                 pl.lit("none, lr=0.01").alias("arm"))
    runs = pl.concat([runs, other_lr])
    assert compare(runs, "zs_acc", "semantic_input", "none, lr=0.01", ("objective.target",)) is None
    assert matched_baseline(runs, "semantic_input", ["none, lr=0.01", "none"], ("objective.target",)) == "none"
    table = compare_to_baselines(runs, "zs_acc", pl.col("objective.target") == "none", ("objective.target",),
                                 direction=lambda arm_runs: 1)
    assert table["arm"].to_list() == ["semantic_input"] and table["baseline"].to_list() == ["none"]
    assert table["verdict"].to_list() == ["reproduced"]


def test_an_arm_holding_its_baselines_own_runs_is_no_measurement():
    """Two trials that train alike are one run listed under both arms (a masking control without a generation
    loss): their difference is 0 by construction, so the row says so and claims nothing, whatever the paper claims;
    a run of either arm that is its own keeps the comparison a measurement."""
    base = _runs(0.0, seeds=4, scales=(100,)).filter(pl.col("arm") == "none")
    runs = pl.concat([base.with_columns(pl.lit("masked").alias("arm"), pl.lit("truncnorm").alias("mask")),
                      base.with_columns(pl.lit("unmasked").alias("arm"), pl.lit("none").alias("mask"))])
    row = compare(runs, "zs_acc", "masked", "unmasked", ("mask",), direction=1)
    assert (row["verdict"], row["direction"], row["n"], row["diff"]) == (SAME_RUNS, 0, 4, 0.0)
    own = runs.with_columns(pl.when((pl.col("arm") == "masked") & (pl.col(SEED) == 0))
                            .then(pl.lit("own-run")).otherwise(pl.col("run_id")).alias("run_id"))
    row = compare(own, "zs_acc", "masked", "unmasked", ("mask",), direction=1)
    assert row["verdict"] != SAME_RUNS and row["direction"] == 1
    copies = runs.with_columns(pl.col("run_id").alias("trained_as"),  # as sweeps.dedupe records a copy
                               (pl.col("run_id") + "-" + pl.col("arm")).alias("run_id"))
    assert compare(copies, "zs_acc", "masked", "unmasked", ("mask",), direction=1)["verdict"] == SAME_RUNS


def test_keys_outside_a_runs_identity_do_not_break_pairs():
    """A run recorded after `train.parallel` changed its default (and `eval.rollout_cache` appeared) is the same
    run as before: it still pairs, and its arm label does not change; an identity key still splits pairs."""
    runs = _runs(0.03, seeds=4, scales=(100,))
    newer = pl.col("arm") == "semantic_input"
    runs = runs.with_columns(pl.when(newer).then(pl.lit("auto")).otherwise(pl.lit("ddp")).alias("train.parallel"),
                             pl.when(newer).then(False).otherwise(None).alias("eval.rollout_cache"))
    assert compare(runs, "zs_acc", "semantic_input", "none", ("objective.target",))["n"] == 4
    assert describe_arms(runs).unique().sort().to_list() == ["target=none", "target=semantic_input"]
    split = runs.with_columns(pl.when(newer).then(0.01).otherwise(0.001).alias("train.lr"))
    assert compare(split, "zs_acc", "semantic_input", "none", ("objective.target",)) is None


def test_curve_stats_and_values_at():
    runs = pl.DataFrame({"run_id": ["a0", "a1", "b0"], "arm": ["A", "A", "B"], SEED: [0, 1, 0],
                         "objective.target": ["x", "x", "none"], "zs_acc": [0.0, 0.0, 0.0]})
    values = {"a0": (0.2, 0.4), "a1": (0.2, 0.6), "b0": (0.2, 0.3)}
    points = [(r, "eval", s, s * 10, "zs_acc", v) for r, vals in values.items()
              for s, v in zip((0, 5), vals, strict=True)]
    curves = pl.LazyFrame(points, schema=CURVE_SCHEMA, orient="row")
    cs = curve_stats(curves, runs, "zs_acc")
    a = cs.filter(pl.col("arm") == "A")
    assert a["samples_seen"].to_list() == [0, 50] and a["mean"].to_list() == pytest.approx([0.2, 0.5])
    assert a["n"].to_list() == [2, 2]
    at = values_at(curves, runs, "zs_acc", 50)
    assert dict(zip(at["run_id"], at["zs_acc"], strict=True)) == {"a0": 0.4, "a1": 0.6, "b0": 0.3}
