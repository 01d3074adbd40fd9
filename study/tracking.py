"""Experiment trackers as optional mirrors of the run store (`train.trackers: [tensorboard, wandb, mlflow]`).

The run store stays the truth: every record it appends to `metrics.jsonl` or `eval.jsonl` is passed on to each
tracker the run names, and a tracker that fails is reported once on stderr and dropped, never failing the run.
Each tracker gets the resolved config as hyperparameters, the run id as the run's name, and the grid and arm
the run belongs to (from the runs directory's grid membership files):
- tensorboard: one event directory per run, `RUNS_DIR/tensorboard/<run id>/`;
- wandb: project `unihetero`, group = grid, job type = arm, run id = the run's id; offline unless the user sets
  `WANDB_MODE`; files under `RUNS_DIR/wandb/`;
- mlflow: an experiment per grid, in `MLFLOW_TRACKING_URI` or else the local store `RUNS_DIR/mlflow.db`.
Each is an optional extra ("tracking"); a run that names one that is not installed fails before training with
one line saying what to install. `replay` mirrors a finished run's records (the `unihetero track` command).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from study.config import RunConfig
from study.errors import UserError

INSTALL = "pip install -e '.[tracking]'"
MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
EVAL_PREFIX = "eval/"


def flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict as dotted keys (lists as JSON strings)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flat(v, f"{key}.")
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else v
    return out


def scalars(record: dict, kind: str) -> tuple[int, dict[str, float]]:
    """The step and the finite numbers of a run-store record, evaluation metrics prefixed with 'eval/'."""
    prefix = EVAL_PREFIX if kind == "eval" else ""
    values = {f"{prefix}{k}": float(v) for k, v in record.items()
              if k not in ("step", "final") and isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v)}
    return int(record.get("step", 0)), values


def membership(run_dir: Path) -> tuple[str, str]:
    """(grid, arm) of a run from its runs directory's grid membership files; ('runs', run id) outside any grid."""
    run_id = run_dir.name
    for path in sorted((run_dir.parent / "grids").glob("*.json")):
        try:
            body = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for trial in body.get("trials", []):
            if trial.get("run_id") == run_id:
                axes = trial.get("axes", {})
                arm = " · ".join(str(v) for k, v in axes.items() if "." not in k and k != "seed") or run_id
                return str(body.get("grid", path.stem)), arm
    return "runs", run_id


class TensorBoardSink:
    def __init__(self, cfg: RunConfig, run_dir: Path, grid: str, arm: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir.parent / "tensorboard" / run_dir.name))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in flat(cfg.to_dict()).items()))
        self.writer.add_text("membership", f"grid {grid}, arm {arm}")

    def log(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, cfg: RunConfig, run_dir: Path, grid: str, arm: str):
        import wandb

        directory = run_dir.parent / "wandb"
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "unihetero"), name=run_dir.name,
                              id=run_dir.name, group=grid, job_type=arm, config=flat(cfg.to_dict()),
                              dir=str(directory), mode=os.environ.get("WANDB_MODE", "offline"), resume="allow",
                              reinit="create_new")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowSink:
    def __init__(self, cfg: RunConfig, run_dir: Path, grid: str, arm: str):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir.parent / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(grid)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(grid)
        found = self.client.search_runs([experiment_id], f"tags.`mlflow.runName` = '{run_dir.name}'", max_results=1)
        if found:  # a resumed run goes on in the same tracker run
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name, tags={"arm": arm}).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in flat(cfg.to_dict()).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


SINKS: dict[str, Callable[..., Any]] = {"tensorboard": TensorBoardSink, "wandb": WandbSink, "mlflow": MlflowSink}


def check_installed(names: list[str]) -> None:
    """Fail in one line, before any training, when a named tracker's package is missing."""
    import importlib.util

    missing = [n for n in names if importlib.util.find_spec(MODULES[n]) is None]
    if missing:
        raise UserError(f"config key 'train.trackers': {', '.join(missing)} not installed (install the "
                        f"optional extra: {INSTALL})")


class Trackers:
    """The run's trackers: each record goes to every one still working; a failure is reported once and that
    tracker dropped."""

    def __init__(self, cfg: RunConfig, run_dir: Path, names: list[str] | None = None):
        grid, arm = membership(run_dir)
        self.sinks: dict[str, Any] = {}
        for name in names if names is not None else cfg.train.trackers:
            self._guard(name, lambda name=name: self.sinks.__setitem__(name, SINKS[name](cfg, run_dir, grid, arm)))

    def _guard(self, name: str, call: Callable[[], Any]) -> None:
        try:
            call()
        except Exception as e:  # a tracker must never fail the run: the run store has every record
            self.sinks.pop(name, None)
            print(f"tracker {name} failed ({e.__class__.__name__}: {e}); it is dropped for this run, the run store "
                  "keeps every record", file=sys.stderr)

    def record(self, name: str, record: dict) -> None:
        """Mirror one run-store record (`metrics.jsonl` or `eval.jsonl`)."""
        kind = {"metrics.jsonl": "train", "eval.jsonl": "eval"}.get(name)
        if kind is None:
            return
        step, values = scalars(record, kind)
        for sink_name, sink in list(self.sinks.items()):
            self._guard(sink_name, lambda sink=sink: sink.log(step, values))

    def close(self) -> None:
        for sink_name, sink in list(self.sinks.items()):
            self._guard(sink_name, sink.close)
        self.sinks.clear()


def replay(run_dir: Path, names: list[str], records: Callable[[str], list[dict]], cfg: RunConfig) -> int:
    """Mirror a run's existing records to the named trackers; returns how many records were sent."""
    trackers = Trackers(cfg, run_dir, names)
    sent = 0
    for file in ("metrics.jsonl", "eval.jsonl"):
        for r in records(file):
            trackers.record(file, r)
            sent += 1
    trackers.close()
    return sent
