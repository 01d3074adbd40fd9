"""The three trackers a run can mirror its records to, each behind `log(step, values)` and `close()`.

- tensorboard: one event directory per run, `RUNS_DIR/tensorboard/<run id>/`, flushed after every record;
- wandb: project `$WANDB_PROJECT` or `unihetero`, name = the run id, id = one made for this run directory and
  kept in it (`trackers.json`), group = the run's first grid, tags = every grid it is in, job type = its arm
  (within W&B's 64 characters); every metric plotted against `global_step` (`define_metric`), so records sent
  out of step order are kept, not dropped; W&B's own `WANDB_MODE` decides online or offline; files under
  `RUNS_DIR/wandb/`;
- mlflow: `MLFLOW_TRACKING_URI` or else the local store `RUNS_DIR/mlflow.db`; experiment
  `MLFLOW_EXPERIMENT_NAME` or else the run's first grid; a tag per grid.
Each has a `destination`, the place its points go: what was mirrored is remembered per destination.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

from study import wandb_log
from study.config import RunConfig

WANDB_TEXT_LIMIT = 64  # W&B rejects a job type or tag longer than this
STEP_METRIC = "global_step"
EVAL_PREFIX = "eval/"  # evaluation metrics' names in every tracker


@dataclasses.dataclass(frozen=True)
class Membership:
    """The grids a run belongs to (sorted; empty outside any grid) and its arm."""

    grids: tuple[str, ...]
    arm: str

    @property
    def grid(self) -> str:
        return self.grids[0] if self.grids else "runs"


class Sink(Protocol):
    """An experiment tracker a run's records are mirrored to."""

    destination: str
    kept: dict[str, dict[str, int]] | None  # what the destination itself says it has, where it can say

    def log(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


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


def within(text: str, limit: int = WANDB_TEXT_LIMIT) -> str:
    """`text` cut to `limit` characters (W&B's limit on a job type or tag), an ellipsis marking the cut."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


class TensorBoardSink:
    """Records mirrored to a TensorBoard event file beside the runs."""

    def __init__(self, cfg: RunConfig, run_dir: Path, member: Membership, wandb_id: str):
        from torch.utils.tensorboard import SummaryWriter

        directory = run_dir.parent / "tensorboard" / run_dir.name
        self.destination, self.kept = f"tensorboard:{directory.resolve()}", None
        self.writer = SummaryWriter(str(directory))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in flat(cfg.to_dict()).items()))
        self.writer.add_text("membership", f"grids {', '.join(member.grids) or '(none)'}, arm {member.arm}")

    def log(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()  # on disk before the step counts as mirrored: a killed run loses none

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """Records mirrored to a W&B run, resumed under the run's stable id."""

    def __init__(self, cfg: RunConfig, run_dir: Path, member: Membership, wandb_id: str):
        import wandb

        directory = run_dir.parent / "wandb"
        directory.mkdir(parents=True, exist_ok=True)
        project = os.environ.get("WANDB_PROJECT", "unihetero")
        self.destination = f"wandb:{os.environ.get('WANDB_ENTITY', '')}/{project}/{wandb_id}"
        # W&B writes its transaction log lazily, so a process killed with -9 loses what it had not written yet: what
        # it kept is read back from the log, not taken from what was handed to it
        self.kept = wandb_log.kept(wandb_log.session_logs(directory, wandb_id), STEP_METRIC, EVAL_PREFIX)
        self.run = wandb.init(project=project, name=run_dir.name, id=wandb_id, group=member.grid,
                              job_type=within(member.arm), tags=[within(g) for g in member.grids],
                              config=flat(cfg.to_dict()) | {"run_id": run_dir.name, "arm": member.arm},
                              dir=str(directory), resume="allow", reinit="create_new")
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("*", step_metric=STEP_METRIC)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values | {STEP_METRIC: step})

    def close(self) -> None:
        self.run.finish()


class MlflowSink:
    """Records mirrored to an MLflow run, resumed by the run's name."""

    def __init__(self, cfg: RunConfig, run_dir: Path, member: Membership, wandb_id: str):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir.parent / 'mlflow.db').resolve()}"
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or member.grid
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.destination, self.kept = f"mlflow:{uri}#{name}", None
        found = self.client.search_runs([experiment_id], f"tags.`mlflow.runName` = '{run_dir.name}'", max_results=1)
        if found:  # a resumed run goes on in the same tracker run
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        tags = {"arm": member.arm} | {f"grid.{g}": "true" for g in member.grids}
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name, tags=tags).info.run_id
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


SINKS: dict[str, type] = {"tensorboard": TensorBoardSink, "wandb": WandbSink, "mlflow": MlflowSink}
