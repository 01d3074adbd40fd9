"""JSONL records of many runs in one Polars pass: the same records as reading line by line, a corrupt file
isolated and read the slow way with its bad lines noted, and configs read in parallel equal to serial."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import polars as pl
import pytest

from analysis import runs as runs_module
from analysis.records import long_curves, per_run, read_records
from tests.run_records import write_run


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_one_pass_equals_line_by_line_and_isolates_a_corrupt_file(tmp_path):
    good = [json.dumps({"step": s, "samples_seen": 10 * s, "final": s == 2, "acc": 0.1 * s, "tag": "x"})
            for s in range(3)]
    files = {f"run{i}": _write(tmp_path / f"run{i}" / "eval.jsonl", good) for i in range(5)}
    bad = files["run3"]
    bad.write_text(bad.read_text() + '{"step": 3, "acc": 0.4}\n{"step": 4, "ac')  # truncated last line
    _write(tmp_path / "run5" / "eval.jsonl", [json.dumps({"step": "7", "acc": 1.0}), json.dumps({"step": 8})])
    files["run5"] = tmp_path / "run5" / "eval.jsonl"
    files["missing"] = tmp_path / "nowhere" / "eval.jsonl"
    notes: dict[str, list[str]] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = read_records(files, notes)
    assert set(notes) == {"run3"} and notes["run3"] == ["eval.jsonl:5: corrupt record skipped"]
    assert len(caught) == 1
    assert records.columns == ["run_id", "step", "samples_seen", "final", "acc"]  # the string field dropped
    assert records.filter(pl.col("run_id") == "run3")["step"].to_list() == [0, 1, 2, 3]
    assert records.filter(pl.col("run_id") == "run5")["step"].to_list() == [None, 8]  # "7" is not a step
    assert records.filter(pl.col("run_id") == "run0")["acc"].to_list() == pytest.approx([0.0, 0.1, 0.2])
    finals = per_run(records, pl.col("final"), last=True)
    assert sorted(finals["run_id"].to_list()) == ["run0", "run1", "run2", "run3", "run4"]
    curves = long_curves(records, "eval").collect()
    assert curves.filter(pl.col("run_id") == "run3").height == 4


def test_a_repeated_step_keeps_its_last_record(tmp_path):
    lines = [json.dumps({"step": 5, "acc": 0.1, "loss": 2.0}), json.dumps({"step": 5, "acc": 0.3})]
    records = read_records({"r": _write(tmp_path / "r.jsonl", lines)}, {})
    curves = long_curves(records, "eval").collect().sort("metric")
    assert curves["metric"].to_list() == ["acc", "loss"] and curves["value"].to_list() == [0.3, 2.0]


def test_configs_read_in_parallel_equal_serial(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    for seed in range(6):
        write_run(runs, [f"train.seed={seed}"], [0.25, 0.5])
    (runs / sorted(p.name for p in runs.iterdir())[0] / "config.yaml").write_text("model: [")
    serial = runs_module.load_runs(runs).runs
    monkeypatch.setattr(runs_module, "PARALLEL_CONFIGS", 2)
    parallel = runs_module.load_runs(runs).runs
    assert parallel.equals(serial)
    assert serial["usable"].sum() == 5 and "unreadable config.yaml" in serial.sort("usable")["reason"][0]
