"""Protocol 3 end to end at smoke scale: the v3 grids (encoder instances cycled by seed, masking trials that train as
other runs) launched into a runs directory with the study's own protocol.yaml beside it, and the report's lead table
deciding each planned comparison of those grids, with the image-resampling noise of the paired differences."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from study.runstore import RunStore
from unihetero.cli import main

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_v3_grids_and_their_decisions_at_smoke_scale(tmp_path):
    runs = tmp_path / "study" / "runs"
    runs.mkdir(parents=True)
    shutil.copy(ROOT / "reports" / "results" / "cpu-v3" / "protocol.yaml", tmp_path / "study" / "protocol.yaml")
    for grid in ("v3_targets_contrastive", "v3_masking"):
        assert main(["sweep", "launch", grid, "--preset", "smoke", "--runs-dir", str(runs), "--workers", "2"]) == 0
    copies = [RunStore(p).status() for p in runs.iterdir() if (p / "status.json").exists()]
    assert sum("same_as" in s for s in copies) == 3  # masking: text only twice, unmasked semantic_input once
    assert main(["report", str(runs), "--out", str(tmp_path / "report"), "--bootstrap", "0", "--no-figures"]) == 0
    lead = {r["comparison"]: r for r in pl.read_csv(tmp_path / "report" / "tables" / "decisions.csv").iter_rows(
        named=True)}
    assert lead["t1_b_semantic_input"]["n"] == 2 and lead["t1_b_semantic_input"]["verdict"] == "open"
    assert lead["t1_b_semantic_input"]["image_noise_sd"] > 0
    assert lead["t3_b_rollout"]["n"] == 0  # the smoke preset rolls out 3 steps: no rollout_rel/8 to pair
    assert lead["masking_b"]["n"] == 1
    assert lead["t1_c_semantic_input"]["n"] == 0  # its grid has not run
    report = (tmp_path / "report" / "report.md").read_text()
    assert report.index("Lead table: each planned comparison decided") < report.index("Generation target, regime (b)")
