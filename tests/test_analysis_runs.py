"""Run tables: synthetic run directories (written by tests/run_records.py), one real
tiny run, and failed, partial and corrupt runs listed with reasons, never a crash."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import polars as pl
import pytest

from analysis.grids import arm_labels, read_grids
from analysis.runs import SEED, D, describe_arms, load_runs
from tests.run_records import write_run


@pytest.fixture
def broken_runs(tmp_path: Path) -> Path:
    """Two good runs and one of every kind of bad one."""
    runs = tmp_path / "runs"
    write_run(runs, ["train.seed=0"], [0.25, 0.5, 0.6])
    corrupt = write_run(runs, ["train.seed=1"], [0.25, 0.5, 0.62])
    with open(corrupt / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "loss/capt\n')
    write_run(runs, ["train.seed=2"], [0.25, 0.4], state="failed")
    write_run(runs, ["train.seed=3"], [0.25, 0.4], state="running")
    garbage = write_run(runs, ["train.seed=4"], [0.25, 0.5, 0.6])
    (garbage / "config.yaml").write_bytes(b"\x00\xffnot: [yaml")
    no_status = write_run(runs, ["train.seed=5"], [0.25, 0.5, 0.6])
    (no_status / "status.json").write_text("{garbage")
    unknown_key = write_run(runs, ["train.seed=6"], [0.25, 0.5, 0.6])
    (unknown_key / "config.yaml").write_text("model: {size: tiny, wings: 2}\n")
    no_final = write_run(runs, ["train.seed=7"], [0.25, 0.5, 0.6])
    (no_final / "eval.jsonl").write_text(json.dumps({"step": 0, "zs_acc": 0.25}) + "\n")
    (runs / "0123456789ab").mkdir()  # an empty run directory
    (runs / "grids").mkdir()  # not a run
    return runs


def test_bad_runs_are_listed_with_reasons_and_left_out(broken_runs: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rs = load_runs(broken_runs)
    assert any("corrupt record skipped" in str(w.message) for w in caught)
    assert len(rs.runs) == 9
    usable = rs.usable
    assert sorted(usable[SEED].to_list()) == [0, 1]
    reasons = dict(zip(rs.runs["run_id"], rs.runs["reason"], strict=True))
    by_seed = {s: r for s, r in zip(rs.runs[SEED], rs.runs["run_id"], strict=True) if s is not None}
    assert reasons[by_seed[2]].startswith("failed: non-finite loss")
    assert reasons[by_seed[3]].startswith("not finished (running")
    assert reasons[by_seed[5]] == "status.json missing or unreadable"
    assert reasons[by_seed[7]] == "completed but no final evaluation"
    bad_config = [r for r in rs.runs["reason"].to_list() if r.startswith("unreadable config.yaml")]
    assert len(bad_config) == 2 and any("wings" in r for r in bad_config)
    assert reasons["0123456789ab"] == "no config.yaml"
    problems = rs.problems
    assert len(problems) == 8  # 7 left out, and the usable run with a corrupt line (a note, still usable)
    noted = problems.filter(pl.col("usable"))
    assert noted["run_id"].to_list() == [by_seed[1]] and "metrics.jsonl:3: corrupt record" in noted["notes"][0]
    # the corrupt run still reports its curves (the good lines)
    curve = rs.curves.filter((pl.col("run_id") == by_seed[1]) & (pl.col("metric") == "loss/caption")).collect()
    assert len(curve) == 2


def test_missing_or_empty_runs_dir(tmp_path: Path):
    for rs in (load_runs(tmp_path / "nope"), load_runs(tmp_path)):
        assert rs.runs.is_empty() and rs.curves.collect().is_empty() and rs.usable.is_empty()
    assert read_grids(tmp_path / "nope") == []


def test_run_table_columns_and_curves(tmp_path: Path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        for target in ("none", "semantic_input"):
            write_run(runs, [f"train.seed={seed}", f"objective.target={target}"], [0.25, 0.4, 0.5, 0.55])
    rs = load_runs(runs)
    df = rs.runs
    assert {"objective.target", D, SEED, "masking.distribution", "zs_acc", "floor/zs_acc", "caption_loss"} <= set(
        df.columns)
    assert df["zs_acc"].to_list() == [0.55] * 4 and df["floor/zs_acc"].to_list() == [0.25] * 4
    assert df["eval.views"][0] == "[1, 2]"  # lists flattened to JSON text
    curves = rs.curves.collect()
    assert set(curves["source"]) == {"eval", "train"}
    zs = curves.filter((pl.col("metric") == "zs_acc") & (pl.col("run_id") == df["run_id"][0])).sort("step")
    assert zs["value"].to_list() == [0.25, 0.4, 0.5, 0.55] and zs["samples_seen"][0] == 0
    assert describe_arms(df).to_list() == [f"target={t}" for t in df["objective.target"]]


def test_reevaluation_replaces_the_final_record(tmp_path: Path):
    path = write_run(tmp_path, [], [0.25, 0.5])
    last = json.loads(path.joinpath("eval.jsonl").read_text().splitlines()[-1])
    with open(path / "eval.jsonl", "a") as f:
        f.write(json.dumps(last | {"zs_acc": 0.7, "reevaluated": True}) + "\n")
    rs = load_runs(tmp_path)
    assert rs.runs["zs_acc"][0] == 0.7
    final = rs.curves.filter((pl.col("metric") == "zs_acc") & (pl.col("step") == last["step"])).collect()
    assert final["value"].to_list() == [0.7]


def test_arm_labels_from_grid_axes():
    axes = [{"arm": a, "objective.target": t, "regime": r, "data.unique_samples": d, "seed": s}
            for a, t in (("text_only", "none"), ("semantic", "semantic_input"))
            for r in ("fixed", "epoch") for d in (10, 100) for s in (0, 1)]
    labels = arm_labels(axes, "g")
    assert sorted(set(labels)) == ["semantic · epoch", "semantic · fixed", "text_only · epoch", "text_only · fixed"]
    weights = [{"arm": a, "objective.semantic_weight": w, "seed": 0} for a in ("s", "p") for w in (0.1, 1.0)]
    assert arm_labels(weights, "g") == ["s · semantic_weight=0.1", "s · semantic_weight=1", "p · semantic_weight=0.1",
                                        "p · semantic_weight=1"]
    assert arm_labels([{"seed": 0}, {"seed": 1}], "only") == ["only", "only"]


def test_unreadable_grid_file_is_skipped(tmp_path: Path):
    (tmp_path / "grids").mkdir()
    (tmp_path / "grids" / "bad__smoke.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable grid membership"):
        assert read_grids(tmp_path) == []


@pytest.mark.slow
def test_a_real_tiny_run_is_read(tmp_path: Path):
    from study.config import load_config as load
    from study.train import train

    cfg = load("tiny", ["train.samples_seen=64", "eval.num_images=4", "eval.probe_images=20", "objective.target=pixel",
                        "eval.every=2"])
    train(cfg, tmp_path / cfg.run_id(), quiet=True)
    rs = load_runs(tmp_path)
    row = rs.usable.row(0, named=True)
    assert row["state"] == "completed" and row["objective.target"] == "pixel"
    assert math.isfinite(row["zs_acc"]) and math.isfinite(row["floor/zs_acc"]) and "pix/psnr" in row
    steps = rs.curves.filter(pl.col("metric") == "zs_acc").collect()["step"].to_list()
    assert sorted(steps) == [0, 2, 4]
    assert set(rs.inference["sweep"]) == {"views", "diffusion_steps"}


def test_a_key_that_a_grid_cycles_by_seed_belongs_to_the_seed_not_to_an_arm():
    """The encoder instance a v3 grid cycles by seed (seed s on instance s mod 5) varies among runs but is no arm:
    labelled by it, each objective split into one arm per instance (the data-scaling report's R*_D then fitted 3 of
    text only's 9 one-epoch runs and failed). A key confounded with the seed alone (one run per seed) still labels."""
    seeds = [0, 1, 2, 3, 4, 5] * 2
    runs = pl.DataFrame({SEED: seeds, D: [1000] * 12, "objective.target": ["none"] * 6 + ["semantic_input"] * 6,
                         "model.encoder_checkpoint": [f"run:encoder{s % 5}" for s in seeds]})
    assert describe_arms(runs).to_list() == ["target=none"] * 6 + ["target=semantic_input"] * 6
    confounded = pl.DataFrame({SEED: [0, 1], "objective.target": ["none", "semantic_input"], "train.lr": [1e-3, 3e-3]})
    assert describe_arms(confounded).to_list() == ["target=none, lr=0.001", "target=semantic_input, lr=0.003"]
