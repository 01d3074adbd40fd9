"""`unihetero report` and `unihetero reproduce` from the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.run_records import write_membership, write_run
from unihetero.cli import main


def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture):
    runs = tmp_path / "runs"
    trials = [({"objective.target": t, "seed": s}, write_run(runs, [f"objective.target={t}", f"train.seed={s}"],
                                                             [0.25, 0.5 + 0.1 * (t != "none") + 0.01 * s]))
              for t in ("none", "semantic_input") for s in (0, 1, 2)]
    write_membership(runs, "generation_target", trials)
    assert main(["report", str(runs), "--out", str(tmp_path / "out"), "--bootstrap", "0"]) == 0
    assert "report.html" in capsys.readouterr().out
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| Generation target | Takeaway 1 | target=semantic_input vs target=none |" in md
    assert main(["report", str(runs)]) == 0  # default: RUNS_DIR/report, which is not mistaken for a run
    assert (runs / "report" / "report.html").is_file()
    assert main(["report", str(runs), "--out", str(tmp_path / "again")]) == 0
    assert "6 run directories" in (tmp_path / "again" / "report.md").read_text()


def test_report_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"error: runs directory '{tmp_path / 'missing'}' does not exist"
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path), "--bootstrap", "-1"])
    assert e.value.code == 2
    assert main(["reproduce", "all", "--preset", "full", "--protocol", "2", "--runs-dir", str(tmp_path / "r")]) == 2
    assert "no grid has a preset 'full'" in capsys.readouterr().err
    # the full preset's backbone paths are placeholders: one line naming the trial, the key and the path
    assert main(["reproduce", "all", "--preset", "full", "--runs-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "grid generation_target (preset full), trial 0" in err
    assert "config key 'model.vision_path': '/path/to/dinov2-large' is not a directory" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_reproduce_runs_a_grid_resumably_and_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture):
    runs, out = tmp_path / "runs", tmp_path / "report"
    args = ["reproduce", "ar_target", "--preset", "smoke", "--runs-dir", str(runs), "--out", str(out)]
    assert main(args) == 0
    members = json.loads((runs / "grids" / "ar_target__smoke.json").read_text())["trials"]
    assert len(members) == 3 and all((runs / t["run_id"] / "status.json").is_file() for t in members)
    md = (out / "report.md").read_text()
    assert "## Autoregression target (grid `ar_target`, preset `smoke`)" in md
    assert re.search(r"input_embedding( \[collapsed \d/\d\])? vs encoder_output", md)  # collapsed arms are marked
    assert (out / "tables" / "verdicts.csv").is_file()
    assert main(args) == 0  # again: every trial is done, nothing reruns
    attempts = [(runs / t["run_id"] / "sweep_attempts.jsonl").read_text().count("\n") for t in members]
    assert attempts == [1, 1, 1]
