"""The GPU benchmark's code runs end to end (at tiny shapes on the CPU: `--smoke`), through the real trainer; its
numbers here mean nothing and are not checked against any target."""

import json

import pytest

from benchmarks import gpu_train


@pytest.mark.slow
def test_gpu_benchmark_trains_through_study_train_and_records_every_figure(tmp_path):
    result = gpu_train.main(str(tmp_path), "smoke")
    (row,) = result["rows"]
    assert "error" not in row, row.get("error")
    assert row["state"] == "completed" and row["steps_timed"] == 4  # the trainer's own run, past its warm-up
    for key in ("tokens_per_s", "bare_tokens_per_s", "model_flops_per_s", "eval_seconds", "mfu_measured_peak"):
        assert row[key] > 0, key
    assert row["trainer_over_bare"] == pytest.approx(row["tokens_per_s"] / row["bare_tokens_per_s"])
    assert row["eval_images"] == 16 and row["trainable"] < row["params"]  # the encoder is frozen
    assert json.loads((tmp_path / "gpu_train-cpu.json").read_text())["rows"] == [row]
