"""The benchmarks' measuring parts at tiny sizes: each runs and measures what it says. The figures themselves come
from `make bench` (benchmarks/results/); here nothing is timed against a target."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import (
    analysis_speed,
    checkpoints,
    common,
    data_throughput,
    dispatch,
    fitting,
    gpu_train,
    hardware,
    host_reads,
    memory,
    synthetic_runs,
    train_step,
)
from study.config import load_config
from study.data.shards import read_index
from study.train import train
from tests.conftest import tiny_config


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    """Benchmark results go to a temporary directory, never over the committed ones."""
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    return tmp_path / "results"


def test_rates_and_results_files(results):
    assert common.best_rate(lambda: len([i * i for i in range(10_000)]), repeats=2) > 0
    path = common.write_result("parts", {"figure": 1.5})
    assert path == results / f"parts-{common.machine()}.json" and json.loads(path.read_text()) == {"figure": 1.5}


def test_the_analysis_reference_gives_the_toolkits_numbers(tmp_path):
    runs = synthetic_runs.write_runs(tmp_path, runs=8, evals=6)
    out = tmp_path / "tables"
    out.mkdir()
    toolkit, reference = analysis_speed.toolkit_tables(runs, out), analysis_speed.pandas_tables(runs, out)
    assert len(toolkit["finals"]) == len(synthetic_runs.ARMS) * len(synthetic_runs.METRICS)
    assert analysis_speed._same(toolkit, reference) < 1e-9


def test_checkpoint_bytes_are_counted_per_writer(tmp_path):
    run = train(tiny_config("train.checkpoint_format=sharded", "train.checkpoint_every=2", "train.samples_seen=32",
                            "eval.inference_scaling=false"), tmp_path / "run", quiet=True)
    newest = sorted((run / "checkpoints").iterdir())[-1]
    written, payload = checkpoints.bytes_per_rank(newest)
    assert written[0] > payload[0] > 0 and written[1:] == payload[1:] == [0] * (checkpoints.WORLD - 1)


def test_render_and_train_rates_of_the_data_benchmark():
    assert data_throughput.render_rate("tiny", images=32) > 0
    assert data_throughput.train_rate("tiny", steps=2) > 0


def test_dispatch_runs_its_no_op_trials_to_completion():
    result = dispatch.measure("local", 3)
    assert result["completed"] == 3 and math.isfinite(result["overhead_per_trial_s"])


def test_the_fitting_benchmark_reads_the_vendored_epoch_points():
    x, y = fitting.epoch_points()
    assert x.shape == (len(y), 2) and (x > 0).all() and (y > 0).all()
    assert fitting.timed(lambda: None) >= 0


def test_gpu_benchmark_data_are_two_shards_of_lengthened_captions(tmp_path):
    shards = gpu_train.write_data(tmp_path, "smoke")
    parts = read_index(str(shards))
    assert len(parts) == 2 and all(p.limit == gpu_train.SCALES["smoke"]["images"] for p in parts)


def test_hardware_peak_and_padded_caption_length():
    assert hardware.matmul_peak(torch.float32, n=64, repeats=2) > 0
    cfg = load_config("tiny")
    assert 0 < hardware.padded_caption_tokens(cfg, batches=2) <= cfg.data.max_caption_tokens


def test_host_reads_counts_no_toolkit_read_between_logs(results):
    result = host_reads.main()
    assert result["toolkit_reads_per_step_between_logs"] == 0 and result["all_reads_per_log_step"] > 0


def test_peak_memory_of_a_training_process():
    assert memory.peak_rss_mb(100, preset="tiny", samples_seen=32) > 50  # torch alone is more


def test_train_step_parts_time_the_hand_loop_and_the_render():
    cfg = tiny_config()
    assert len(train_step.reference_batches(cfg)) == 8
    times = train_step.reference_step_seconds(cfg, steps=train_step.WARMUP + 2)
    assert len(times) == 2 and min(times) > 0
    assert len(train_step.render_times(cfg, batches=2)) == 2
