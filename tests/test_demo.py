"""`make demo`: a demo-scale report opens with the at-a-glance summary (scale, whether text only learned, the
headline figure, what held, and that demo verdicts are not the study's), and the printed summary ends with
where the report and the full v2 results are. The demo grid is the v2 pipeline: an encoder stage, then VLM arms
on that encoder, frozen."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from reports.build import build_report
from reports.glance import FULL_RESULTS
from sweeps.spec import expand, load_spec, pipeline
from tests.run_records import demo_runs, write_membership, write_run


@pytest.mark.parametrize(("final", "learned"), [(0.62, True), pytest.param(0.27, False, marks=pytest.mark.slow)])
def test_a_demo_report_opens_with_the_summary(tmp_path, final, learned):
    runs = tmp_path / "runs"
    demo_runs(runs, final)
    build_report(runs, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    first = md.split("\n## ")[1]
    assert first.startswith("At a glance (demo scale: not the study's verdicts)")
    assert "Demo scale: the `tiny` model" in first and "3 seed(s)" in first
    assert ("it learned, clearly above chance" in first) is learned
    assert ("did NOT learn clearly" in first) is not learned
    assert FULL_RESULTS in first and "![" in first  # the pointer to the study, and the headline figure
    table = pl.read_csv(tmp_path / "report" / "tables" / "glance.csv")
    held = dict(zip(table["arm"], table["held at demo scale?"], strict=True))
    assert held["text_only"] == "-" and held["semantic_input"] == "reproduced"
    printed = subprocess.run([sys.executable, "-m", "reports.glance", str(tmp_path / "report")], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()
    assert printed[-1] == (f"demo report: {tmp_path / 'report' / 'report.html'} (and report.md); "
                           f"the full v2 results: {FULL_RESULTS}")
    assert any("Text only reaches zs_acc" in line for line in printed)


def test_other_reports_do_not_open_with_it(tmp_path):
    runs = tmp_path / "runs"
    p = write_run(runs, ["train.seed=0"], [0.24, 0.5])
    write_membership(runs, "v2_demo", [({"arm": "text_only", "objective.target": "none", "seed": 0}, p)],
                     preset="smoke")
    build_report(runs, tmp_path / "report", draw_figures=False)
    assert "At a glance" not in (tmp_path / "report" / "report.md").read_text()


def test_the_demo_grid_is_the_v2_pipeline_and_small():
    spec = load_spec("v2_demo", "demo")
    trials = pipeline(spec)
    stage = [t for t in trials if t.stage]
    vlm = [t for t in trials if not t.stage]
    assert [t.config.objective.task for t in stage] == ["contrastive"]
    assert all(t.config.model.freeze_encoder and t.config.model.encoder_checkpoint == f"run:{stage[0].run_id}"
               for t in vlm)
    assert {t.config.train.seed for t in vlm} == {0, 1, 2}  # a verdict needs 3 pairs
    assert all(t.config.data.world_version == 2 for t in trials)
    # the budget: at most ~4,000 steps of the small model in all (about 8 minutes on 2 cores)
    assert sum(t.config.steps * t.config.train.batch_size for t in trials) / 64 <= 4000
    assert np.all([t.config.eval.every > 0 for t in vlm])
    assert expand(load_spec("v2_demo", "smoke"))
