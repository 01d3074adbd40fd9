"""Experiment trackers mirror the run store: a tiny run with `train.trackers` shows its metrics, evaluations and
config in TensorBoard, MLflow and W&B (offline), under the same run id as without trackers; a tracker that fails
is reported once and the run completes; a tracker that is not installed is one clear error before training;
`unihetero track` exports finished runs, grouped by every grid and arm, in step order; a run killed with -9 and
resumed shows each step once in every tracker, with the run store's values; the W&B run id is made once per run
directory."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study import wandb_log
from study.config import load_config
from study.runstore import RunStore
from study.tracking import SINKS
from study.train import train
from tests.run_records import write_membership
from tests.wandb_records import run_records, wandb_history
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


def _wandb_runs(run_dir: Path) -> list[Path]:
    """The offline W&B run directories of this run (one per session that mirrored it), oldest first."""
    wandb_id = json.loads((run_dir / "trackers.json").read_text())["wandb_id"]
    return [log.parent for log in wandb_log.session_logs(run_dir.parent / "wandb", wandb_id)]


def _history_once_written(run_dir: Path, rows_with: str, count: int) -> list[dict]:
    """W&B's history rows of the run once its transaction logs hold `count` rows with the key `rows_with`: W&B's
    own process writes them, and under load that can end after `finish()` has returned (up to 30 s here); then as
    they are, so rows W&B dropped still fail the caller's assertions."""
    deadline = time.monotonic() + 30
    while True:
        rows = wandb_history(_wandb_runs(run_dir))
        if sum(rows_with in r for r in rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _mlflow_run(runs_dir, experiment: str, run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(runs_dir / 'mlflow.db').resolve()}")
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], f"tags.`mlflow.runName` = '{run_id}'")
    assert len(found) == 1
    return client, found[0]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")  # W&B's own default is online; the tests have no network
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))


@pytest.mark.slow
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

    rows = _history_once_written(run_dir, "eval/zs_acc", len(evals))
    assert [(r["global_step"], r["loss/caption"]) for r in rows if "loss/caption" in r] == \
        [(r["step"], pytest.approx(r["loss/caption"])) for r in metrics]
    assert [r["global_step"] for r in rows if "eval/zs_acc" in r] == [r["step"] for r in evals]
    (run,) = run_records(_wandb_runs(run_dir), "run")
    assert run.display_name == cfg.run_id() and b"train.seed" in run.config.SerializeToString()


def test_a_failing_tracker_is_reported_once_and_the_run_completes(tmp_path, offline, monkeypatch, capsys):
    calls = []

    class Broken:
        destination, kept = "broken", None

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


@pytest.mark.slow
def test_track_exports_finished_runs_grouped_by_every_grid_and_arm_in_step_order(tmp_path, offline, monkeypatch,
                                                                                 capsys):
    runs = tmp_path / "runs"
    cfg = load_config("tiny", OVERRIDES)
    run_dir = train(cfg, runs / cfg.run_id(), quiet=True)
    long_arm = "semantic_input_with_a_name_well_beyond_what_weights_and_biases_accepts_as_a_job_type"
    write_membership(runs, "generation_target", [({"arm": long_arm, "objective.target": "none", "seed": 0}, run_dir)])
    write_membership(runs, "masking", [({"arm": "uniform", "seed": 0}, run_dir)])
    evals = RunStore(run_dir).records("eval.jsonl")
    assert main(["track", str(runs), "--to", "mlflow"]) == 0
    n_records = len(RunStore(run_dir).records("metrics.jsonl")) + len(evals)
    assert f"mlflow: 1 run(s), {n_records} record(s) sent" in capsys.readouterr().out
    client, run = _mlflow_run(runs, "generation_target", cfg.run_id())
    assert run.data.tags["arm"] == long_arm
    assert run.data.tags["grid.generation_target"] == run.data.tags["grid.masking"] == "true"  # in both grids
    assert [m.value for m in client.get_metric_history(run.info.run_id, "eval/zs_acc")] == \
        pytest.approx([r["zs_acc"] for r in evals])
    assert main(["track", str(runs), "--to", "mlflow"]) == 0  # the destination has every record: none again
    assert "0 record(s) sent" in capsys.readouterr().out
    assert len(client.get_metric_history(run.info.run_id, "eval/zs_acc")) == len(evals)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "my-ablations")  # MLflow's own variable names the experiment
    assert main(["track", str(runs), "--to", "mlflow"]) == 0
    _mlflow_run(runs, "my-ablations", cfg.run_id())

    # W&B: the evaluations are not dropped behind the training records, and the arm fits W&B's job type
    assert main(["track", str(runs), "--to", "wandb"]) == 0
    rows = _history_once_written(run_dir, "eval/zs_acc", len(evals))
    assert [r["global_step"] for r in rows if "eval/zs_acc" in r] == [r["step"] for r in evals]
    assert [r["global_step"] for r in rows] == sorted(r["global_step"] for r in rows)  # replayed in step order
    (run,) = run_records(_wandb_runs(run_dir), "run")
    assert len(run.job_type) == 64 and long_arm.startswith(run.job_type[:-1])
    assert list(run.tags) == ["generation_target", "masking"] and run.run_group == "generation_target"

    assert main(["track", str(runs), "--to", "tensorboard"]) == 0
    assert "eval/zs_acc" in _tensorboard_scalars(runs / "tensorboard" / cfg.run_id())
    (runs / "garbage").mkdir()
    (runs / "garbage" / "config.yaml").write_text("model: [unclosed")
    assert main(["track", str(runs), "--to", "tensorboard"]) == 0
    captured = capsys.readouterr()
    assert "skipped: " in captured.err and "garbage" in captured.err and "1 skipped" in captured.out


@pytest.mark.slow
def test_a_run_killed_with_sigkill_and_resumed_shows_each_step_once_in_every_tracker(tmp_path, offline):
    """Killed at step 17 (checkpoint at 10, a metrics record every step): steps 11-17 are redone on resume, and
    no tracker gets them twice; every tracker's history equals the run store's."""
    from tests.reliability.test_kill_resume import ROOT

    overrides = ["train.samples_seen=480", "train.checkpoint_every=10", "train.log_every=1", "eval.every=10",
                 "eval.num_images=4", "eval.inference_scaling=false", "train.trackers=[tensorboard,mlflow,wandb]"]
    cfg = load_config("tiny", overrides)
    runs = tmp_path / "runs"
    run_dir = runs / cfg.run_id()
    # a job of its own: not attached to this test process's W&B service (which would keep the killed run's stream)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    killed = subprocess.run([sys.executable, "-m", "tests.reliability.kill_driver", str(run_dir), "step:17",
                             *overrides], cwd=ROOT, env=env, capture_output=True, timeout=600)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert max(r["step"] for r in RunStore(run_dir).records("metrics.jsonl")) == 17
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    store = RunStore(run_dir)
    metrics, evals = store.records("metrics.jsonl"), store.records("eval.jsonl")
    assert [r["step"] for r in metrics] == list(range(1, 31))
    expected = [(r["step"], pytest.approx(r["loss/caption"])) for r in metrics]

    assert _tensorboard_scalars(runs / "tensorboard" / cfg.run_id())["loss/caption"] == expected
    client, run = _mlflow_run(runs, "runs", cfg.run_id())
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss/caption")] == expected
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/zs_acc")] == [r["step"] for r in evals]
    sessions = _wandb_runs(run_dir)
    assert len(sessions) == 2  # the killed session and the resumed one, one W&B run id
    rows = wandb_history(sessions)
    assert [(r["global_step"], r["loss/caption"]) for r in rows if "loss/caption" in r] == expected
    assert [r["global_step"] for r in rows if "eval/zs_acc" in r] == [r["step"] for r in evals]


def test_the_wandb_id_is_made_once_per_run_directory_and_moves_with_it(tmp_path, offline):
    cfg = load_config("tiny", [*OVERRIDES, "train.checkpoint_every=2", "train.trackers=[wandb]"])
    first = train(cfg, tmp_path / "a" / cfg.run_id(), until_step=2, quiet=True)
    second = train(cfg, tmp_path / "b" / cfg.run_id(), quiet=True)
    ids = [json.loads((d / "trackers.json").read_text())["wandb_id"] for d in (first, second)]
    assert ids[0] != ids[1]  # one config trained in two runs directories: two W&B runs, not one merged
    moved = tmp_path / "c" / cfg.run_id()
    shutil.move(first.parent, moved.parent)  # the whole runs directory, its W&B files with it
    assert train(cfg, moved, quiet=True) == moved  # resumed at step 2 in its new place
    sessions = _wandb_runs(moved)
    assert len(sessions) == 2 and all(ids[0] in p.name for p in sessions)  # "-1" added in the same second
    steps = [r["step"] for r in RunStore(moved).records("metrics.jsonl")]
    history = _history_once_written(moved, "loss/caption", len(steps))
    assert [r["global_step"] for r in history if "loss/caption" in r] == steps


def test_wandb_mode_is_left_to_wandb(tmp_path, offline, monkeypatch):
    """W&B's own default (online) and `WANDB_MODE` decide; the toolkit does not force offline."""
    import wandb

    seen = {}
    real = wandb.init

    def init(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    cfg = load_config("tiny", [*OVERRIDES, "train.trackers=[wandb]"])
    train(cfg, tmp_path / "runs" / cfg.run_id(), quiet=True)
    assert seen and "mode" not in seen and seen["reinit"] == "create_new"


def test_resuming_with_other_trackers_is_the_same_run(tmp_path, offline):
    runs = tmp_path / "runs"
    cfg = load_config("tiny", OVERRIDES)
    train(cfg, runs / cfg.run_id(), quiet=True)
    with_tb = load_config("tiny", [*OVERRIDES, "train.trackers=[tensorboard]"])
    assert train(with_tb, runs / cfg.run_id(), quiet=True) == runs / cfg.run_id()  # no "different config" error
    assert json.loads((runs / cfg.run_id() / "status.json").read_text())["state"] == "completed"
