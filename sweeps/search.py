"""Optuna search over continuous parameters inside one arm, pruning on intermediate evaluations.

Each Optuna trial is one run (run id = hash of its config, in RUNS_DIR/<run_id>), trained in
segments that end at the evaluation steps: after each segment the run's eval.jsonl record of that
step is reported to Optuna, and a pruned trial stops there, its run closed with status failed and
reason "pruned ...". Segments go through `execute_trial` in this process (local) or as Ray tasks.
The study lives in a journal file (default) or a database URL; rerunning the same command resumes
it: finished trials are kept, and a trial left running by a dead process is failed and re-enqueued
with the same parameters, so its run resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna

from study.config import load_config
from study.errors import UserError
from study.runstore import RunStore
from sweeps.execute import TrialTask, execute_trial
from sweeps.layout import run_dir
from sweeps.lock import TrialLock, holder

STALE_S = 120.0  # a RUNNING trial whose run has neither a live lock nor a status update this recent is dead
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Param:
    """A searched config key and its range."""

    key: str
    low: float
    high: float
    log: bool = False


def parse_param(text: str) -> Param:
    """'train.lr=1e-4:1e-2:log' -> Param('train.lr', 1e-4, 1e-2, log=True)."""
    key, sep, spec = text.partition("=")
    parts = spec.split(":")
    try:
        if not sep or "." not in key or len(parts) not in (2, 3) or parts[2:] not in ([], ["log"]):
            raise ValueError
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise UserError(f"--param '{text}': expected section.key=LOW:HIGH[:log]") from None
    log = parts[2:] == ["log"]
    if not (math.isfinite(low) and math.isfinite(high) and low < high) or (log and low <= 0):
        raise UserError(f"--param '{text}': need finite LOW < HIGH (and LOW > 0 with log)")
    return Param(key, low, high, log)


@dataclass(frozen=True)
class SearchOptions:
    """A hyperparameter search: the arm, parameters, metric, trials and backend."""

    source: str  # preset name or config YAML: the arm
    params: tuple[Param, ...]
    metric: str = "caption_loss"
    direction: str = "minimize"
    trials: int = 10
    eval_every: int = 100
    overrides: tuple[str, ...] = ()
    runs_dir: Path = Path("runs")
    storage: str = ""  # journal file path or database URL (default: RUNS_DIR/search/<study>.journal)
    study_name: str = "search"
    backend: str = "local"  # local | ray
    workers: int = 1  # trials at once
    ray_address: str | None = None
    cpus_per_trial: float = 1.0
    pruner: str = "median"  # median | none
    seed: int = 0


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """A database for a URL (scheme://...), a journal file (safe on shared filesystems) otherwise."""
    if "://" in spec:
        return optuna.storages.RDBStorage(spec)
    from optuna.storages.journal import JournalFileBackend

    Path(spec).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(spec))


def _config_overrides(options: SearchOptions, trial: optuna.Trial) -> list[str]:
    chosen = [f"{p.key}={trial.suggest_float(p.key, p.low, p.high, log=p.log)!r}" for p in options.params]
    every = options.eval_every
    return [*options.overrides, *chosen, f"eval.every={every}", f"train.checkpoint_every={every}"]


def check_options(options: SearchOptions) -> None:
    """Resolve the arm at each parameter's bounds, so a bad key or value fails before any trial."""
    for p in options.params:
        for value in (p.low, p.high):
            load_config(options.source, [*options.overrides, f"{p.key}={value!r}"])


def _metric(run: Path, step: int, metric: str) -> float:
    records = [r for r in RunStore(run).records("eval.jsonl") if r.get("step") == step]
    if not records or metric not in records[-1]:
        keys = ", ".join(k for k in (records[-1] if records else {}) if k not in ("step", "final"))
        raise UserError(f"metric {metric!r} not in the evaluation of step {step} of {run} (have: {keys})")
    return float(records[-1][metric])


def _close_pruned(run: Path, step: int, study_name: str, number: int) -> None:
    with TrialLock(run) as held:
        if held:
            RunStore(run).write_status("failed", step=step, pruned=True,
                                       reason=f"pruned by search {study_name} trial {number} at step {step}")


class SegmentFailed(Exception):
    """A segment ended with the run failed (non-finite loss, crash) or held by another process."""


Objective = Callable[[optuna.Trial], float]


def _objective(options: SearchOptions, dispatch: Callable[[TrialTask], dict]) -> Objective:
    def objective(trial: optuna.Trial) -> float:
        cfg = load_config(options.source, _config_overrides(options, trial))
        run = run_dir(options.runs_dir, cfg.run_id())
        trial.set_user_attr("run_id", cfg.run_id())
        task = TrialTask(str(run), cfg.to_dict())

        def segment(stop: int | None) -> float:
            """Train up to the checkpoint at `stop` (None: to the end); the metric evaluated there."""
            record = dispatch(dataclasses.replace(task, until_step=stop))
            if str(record.get("reason", "")).startswith("pruned"):  # closed by an earlier trial's pruning
                raise optuna.TrialPruned()
            if record["outcome"] in ("locked", "error") or record["state"] == "failed":
                raise SegmentFailed(f"run {cfg.run_id()}: {record['outcome']} {record.get('reason', '')}")
            return _metric(run, cfg.steps if stop is None else stop, options.metric)

        for stop in range(options.eval_every, cfg.steps, options.eval_every):
            trial.report(segment(stop), stop)
            if trial.should_prune():
                _close_pruned(run, stop, options.study_name, trial.number)
                raise optuna.TrialPruned()
        return segment(None)

    return objective


def _recover_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage, runs_dir: Path) -> int:
    """Fail and re-enqueue the trials a dead process left RUNNING; returns how many."""
    now, count = time.time(), 0
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        run_id = t.user_attrs.get("run_id")
        status = RunStore(run_dir(runs_dir, run_id)).status() if run_id else {}
        last = status.get("updated_at", t.datetime_start.timestamp() if t.datetime_start else 0.0)
        if (run_id and holder(run_dir(runs_dir, run_id))) or now - last < STALE_S:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"resumes_trial": t.number})
        count += 1
    return count


def _dispatcher(options: SearchOptions) -> tuple[Callable[[TrialTask], dict], Callable[[], None]]:
    """(run one segment, clean up) for the chosen backend."""
    if options.backend == "local":
        return execute_trial, lambda: None
    import ray

    from sweeps.backends.raytune import RayOptions, connect

    started = connect(RayOptions(address=options.ray_address))
    remote = ray.remote(execute_trial).options(num_cpus=options.cpus_per_trial, max_retries=2)
    return (lambda task: ray.get(remote.remote(task))), (ray.shutdown if started else lambda: None)


def run_search(options: SearchOptions) -> optuna.Study:
    """Create or resume the study and run it until `options.trials` trials have finished."""
    check_options(options)
    default_storage = options.runs_dir / "search" / f"{options.study_name}.journal"
    storage = open_storage(options.storage or str(default_storage))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=2) if options.pruner == "median"
              else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, study_name=options.study_name, direction=options.direction,
                                load_if_exists=True, pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=options.seed))
    recovered = _recover_interrupted(study, storage, options.runs_dir)
    if recovered:
        log.warning("study %s: %d trial(s) left running by a dead process re-enqueued", options.study_name,
                    recovered)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    remaining = options.trials - len(study.get_trials(deepcopy=False, states=finished))
    if remaining > 0:
        dispatch, close = _dispatcher(options)
        try:
            study.optimize(_objective(options, dispatch), n_trials=remaining, n_jobs=options.workers,
                           catch=(SegmentFailed,))
        finally:
            close()
    return study
