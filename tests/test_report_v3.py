"""Protocol 3 end to end at smoke scale: the v3 grids (encoder instances cycled by seed, masking trials that train as
other runs) launched into a runs directory with the study's own protocol.yaml beside it, and the report's lead table
deciding each planned comparison of those grids, with the image-resampling noise of the paired differences."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from analysis.aggregate import SAME_RUNS
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
    # the grid sections are descriptive: no rule judges their paired comparisons (the lead table decides); text
    # only masked against unmasked compares one run with itself, and says so instead of a difference of 0
    tables = tmp_path / "report" / "tables"
    verdicts = pl.read_csv(tables / "v3_targets_contrastive__smoke_comparisons.csv")["verdict"]
    assert set(verdicts) == {"descriptive: no verdict (protocol)"}
    masking = {r["arm"]: r for r in pl.read_csv(tables / "v3_masking__smoke_comparisons.csv").iter_rows(named=True)}
    assert masking["semantic_input · truncnorm_mar"]["verdict"] == "descriptive: no verdict (protocol)"
    assert masking["text_only · truncnorm_mar"]["verdict"] == SAME_RUNS
    assert "text_only · truncnorm_mar vs" not in report  # not a claim tested: no verdict row


def test_the_lead_reads_each_comparisons_recorded_looks_and_says_its_verdict_in_words(tmp_path):
    """The looks `--until-decided` records are what the report decides at (every preset of the grid, in order), on
    the pairs they saw; the verdict reads as one of the protocol's four words."""
    import json

    from reports.decisions import at_looks, recorded_looks, verdict_words

    looks = tmp_path / "looks"
    looks.mkdir()
    rows = [{"comparisons": {"a": {"n": 3}, "b": {"n": 3}}}, {"comparisons": {"a": {"n": 5}}}]
    (looks / "grid__cpu.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (looks / "other__cpu.jsonl").write_text(json.dumps({"comparisons": {"a": {"n": 9}}}) + "\n")
    assert recorded_looks(tmp_path, "grid") == {"a": [{"n": 3}, {"n": 5}], "b": [{"n": 3}]}
    # a wave in progress (6 pairs after looks at 3 and 5) is counted, not looked at: decided at 5 as recorded
    assert at_looks([0.1] * 6, [3, 5]) == ([0.1] * 5, [3, 5], 1)
    assert at_looks([0.1] * 5, [3, 5]) == ([0.1] * 5, [3, 5], 0)
    assert at_looks([0.1] * 4, []) == ([0.1] * 4, [4], 0)  # no look recorded: one look at the pairs there are
    assert at_looks([0.1] * 4, [3, 5]) == ([0.1] * 4, [3, 4], 0)  # records missing here: a look at what there is
    assert verdict_words("open", 0.02, 12, 5, since=1) == ("open at 5 seeds: 12 seeds would decide it; 1 more "
                                                           "pair(s) since, not looked at yet")
    assert verdict_words("equivalent", 0.02, None, 5) == "equivalent within +-0.02"
    assert verdict_words("inconclusive", 0.02, 14, 11) == "inconclusive at 11 seeds: 14 seeds would decide it"
    assert verdict_words("open", 0.02, None, 3).startswith("open at 3 seeds")
    assert verdict_words("superior", 0.02, None, 5) == "superior"
    assert verdict_words("open", 0.02, None, 0) == "not started"  # no pairs: no variance, no seed count
    assert "not measured" in verdict_words("open", 0.02, None, 1)
    from reports.decisions import difference_words

    assert difference_words(0.0096, float("-inf"), float("inf"), 3) == "+0.0096 [unbounded at this look]"
    assert difference_words(0.0096, -0.01, 0.03, 5) == "+0.0096 [-0.01, +0.03]"
