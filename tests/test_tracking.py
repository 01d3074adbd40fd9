"""Experiment trackers mirror the run store: a tiny run with `train.trackers` shows its metrics, evaluations and
config in TensorBoard, MLflow and W&B (offline), under the same run id as without trackers; a tracker that fails
is reported once and the run completes; a tracker that is not installed is one clear error before training;
`unihetero track` exports finished runs, grouped by grid and arm."""

from __future__ import annotations

import importlib.util
import json

import pytest

from study.config import load_config
from study.runstore import RunStore
from study.tracking import SINKS
from study.train import train
from tests.test_analysis_runs import write_grid
from unihetero.cli import main

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
pytest.importorskip("wandb")

OVERRIDES = ["train.samples_seen=64", "eval.every=2", "eval.inference_scaling=false"]


def _tensorboard_scalars(directory) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _mlflow_run(runs_dir, experiment: str, run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(runs_dir / 'mlflow.db').resolve()}")
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], f"tags.`mlflow.runName` = '{run_id}'")
    assert len(found) == 1
    return client, found[0]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    for key in ("MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))


def test_a_run_mirrors_its_records_to_every_tracker(tmp_path, offline):
    cfg = load_config("tiny", [*OVERRIDES, "train.trackers=[tensorboard, mlflow, wandb]"])
    assert cfg.run_id() == load_config("tiny", OVERRIDES).run_id()  # trackers are not part of the run
    runs = tmp_path / "runs"
    run_dir = train(cfg, runs / cfg.run_id(), quiet=True)
    store = RunStore(run_dir)
    metrics, evals = store.records("metrics.jsonl"), store.records("eval.jsonl")

    tb = _tensorboard_scalars(runs / "tensorboard" / cfg.run_id())
    assert tb["loss/caption"] == [(r["step"], pytest.approx(r["loss/caption"])) for r in metrics]
    assert [s for s, _ in tb["eval/zs_acc"]] == [r["step"] for r in evals]

    client, run = _mlflow_run(runs, "runs", cfg.run_id())
    history = client.get_metric_history(run.info.run_id, "loss/caption")
    assert [(m.step, m.value) for m in history] == [(r["step"], pytest.approx(r["loss/caption"])) for r in metrics]
    assert run.data.params["train.seed"] == "0" and run.info.status == "FINISHED"

    offline_runs = list((runs / "wandb").rglob(f"offline-run-*-{cfg.run_id()}"))
    assert len(offline_runs) == 1
    log = (offline_runs[0] / f"run-{cfg.run_id()}.wandb").read_bytes()  # the offline run's record stream
    assert b"train.seed" in log and b"loss/caption" in log and b"eval/zs_acc" in log


def test_a_failing_tracker_is_reported_once_and_the_run_completes(tmp_path, offline, monkeypatch, capsys):
    calls = []

    class Broken:
        def __init__(self, *args):
            pass

        def log(self, step, values):
            calls.append(step)
            raise ConnectionError("tracker server unreachable")

        def close(self):
            raise AssertionError("a dropped tracker is not closed")

    monkeypatch.setitem(SINKS, "tensorboard", Broken)
    cfg = load_config("tiny", [*OVERRIDES, "train.trackers=[tensorboard]"])
    run_dir = train(cfg, tmp_path / "runs" / cfg.run_id(), quiet=True)
    assert RunStore(run_dir).status()["state"] == "completed"
    assert len(calls) == 1
    assert capsys.readouterr().err.count("tracker tensorboard failed (ConnectionError") == 1


def test_a_tracker_that_is_not_installed_is_one_line_before_training(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code = main(["train", "tiny", *OVERRIDES, "train.trackers=[wandb]", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "train.trackers" in err and "wandb not installed" in err and ".[tracking]" in err
    assert not list((tmp_path / "runs").glob("*/metrics.jsonl"))


def test_bad_tracker_name_names_the_key_and_the_choices(tmp_path, capsys):
    code = main(["train", "tiny", "train.trackers=[neptune]", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "train.trackers" in err and "tensorboard, wandb, mlflow" in err


def test_track_exports_finished_runs_grouped_by_grid_and_arm(tmp_path, offline, capsys):
    runs = tmp_path / "runs"
    cfg = load_config("tiny", OVERRIDES)
    run_dir = train(cfg, runs / cfg.run_id(), quiet=True)
    write_grid(runs, "generation_target", [({"arm": "text_only", "objective.target": "none", "seed": 0}, run_dir)])
    assert main(["track", str(runs), "--to", "mlflow"]) == 0
    assert "mlflow: 1 run(s)" in capsys.readouterr().out
    client, run = _mlflow_run(runs, "generation_target", cfg.run_id())
    assert run.data.tags["arm"] == "text_only"
    evals = RunStore(run_dir).records("eval.jsonl")
    assert [m.value for m in client.get_metric_history(run.info.run_id, "eval/zs_acc")] == \
        pytest.approx([r["zs_acc"] for r in evals])
    assert main(["track", str(runs), "--to", "tensorboard"]) == 0
    assert "eval/zs_acc" in _tensorboard_scalars(runs / "tensorboard" / cfg.run_id())
    (runs / "garbage").mkdir()
    (runs / "garbage" / "config.yaml").write_text("model: [unclosed")
    assert main(["track", str(runs), "--to", "tensorboard"]) == 0
    captured = capsys.readouterr()
    assert "skipped: " in captured.err and "garbage" in captured.err and "1 skipped" in captured.out


def test_resuming_with_other_trackers_is_the_same_run(tmp_path, offline):
    runs = tmp_path / "runs"
    cfg = load_config("tiny", OVERRIDES)
    train(cfg, runs / cfg.run_id(), quiet=True)
    with_tb = load_config("tiny", [*OVERRIDES, "train.trackers=[tensorboard]"])
    assert train(with_tb, runs / cfg.run_id(), quiet=True) == runs / cfg.run_id()  # no "different config" error
    assert json.loads((runs / cfg.run_id() / "status.json").read_text())["state"] == "completed"
