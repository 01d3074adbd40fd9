"""Launch one grid: write its membership, run every trial (upstream stages first) through a backend, read states
back."""

from __future__ import annotations

import sys
from pathlib import Path

from study.errors import UserError
from study.upstream import has_weights
from sweeps.backend_errors import record_errors, with_backend_errors
from sweeps.backends import backend, backend_session
from sweeps.dedupe import record_copy, representatives
from sweeps.execute import TrialTask
from sweeps.layout import run_dir, write_membership
from sweeps.spec import GridSpec, Trial, pipeline, waves
from sweeps.status import GridProgress, TrialState, collect, trial_run_state
from sweeps.time_left import longest_first


def launch_grid(spec: GridSpec, runs_dir: Path, backend_name: str, options: object,
                retry_failed: bool = False) -> list[TrialState]:
    """Run every trial of the grid (`launch_trials`)."""
    return launch_trials(spec, pipeline(spec), runs_dir, backend_name, options, retry_failed)


def launch_trials(spec: GridSpec, trials: list[Trial], runs_dir: Path, backend_name: str, options: object,
                  retry_failed: bool = False) -> list[TrialState]:
    """Run `trials` of the grid (upstream stages first, then seed-major with each seed's longest trial first:
    `sweeps.time_left.longest_first`; completed ones are skipped, partial ones resume), recorded as the grid's
    membership; their states after. A backend with `launch_waves` (Slurm) gets every wave at once and chains them by
    job dependencies; the others run wave after wave, each trial only once its upstream runs completed. A trial that
    would train exactly as another run (`sweeps.dedupe`) is not trained: once that run completed, it is recorded as
    its copy. A trial the backend could not run (its job never started, its worker process died) keeps the state its
    run store shows, with the backend's reason beside it, which `sweep status` shows too (`sweeps.backend_errors`)."""
    check_trial_inputs(spec, trials)
    check_upstream_weights(spec, trials, runs_dir)
    copies = representatives(trials, runs_dir)
    engine = backend(backend_name)
    with backend_session(engine, options):  # an unreachable cluster fails here, before anything is written
        if hasattr(engine, "check_shared"):  # a runs directory some node cannot see fails here too
            engine.check_shared(runs_dir, options)
        write_membership(runs_dir, spec, trials)
        print(f"grid {spec.name} (preset {spec.scale}): {len(trials)} trials on {backend_name}"
              + (f", {len(copies)} trained as other runs" if copies else ""), file=sys.stderr)
        records: list[dict] = []
        with GridProgress(trials, runs_dir):
            to_train = waves(longest_first([t for t in trials if t.run_id not in copies], runs_dir))
            if hasattr(engine, "launch_waves"):
                records += engine.launch_waves([_tasks(w, runs_dir, retry_failed) for w in to_train], options)
            else:
                for wave in to_train:
                    ready = [t for t in wave if all(_completed(runs_dir, up) for up in t.upstream)]
                    records += engine.launch(_tasks(ready, runs_dir, retry_failed), options)
            for t in trials:
                if t.run_id in copies:
                    record_copy(runs_dir, t, copies[t.run_id])
    record_errors(runs_dir, spec, trials, records, backend_name)
    return with_backend_errors(collect(trials, runs_dir), runs_dir, spec)


def check_trial_inputs(spec: GridSpec, trials: list[Trial]) -> None:
    """Every trial's files (pretrained backbones, shards, benchmarks) exist where its config says: a preset whose
    paths are still placeholders is one line naming the trial, the key and the path, before anything is written
    (the runs directory is on a file system every worker sees, so the driver sees them too)."""
    from study.inputs import check_inputs

    for trial in trials:
        try:
            check_inputs(trial.config)
        except UserError as e:
            raise UserError(f"grid {spec.name} (preset {spec.scale}), trial {trial.index} ({trial.run_id}): {e}") \
                from None


def check_upstream_weights(spec: GridSpec, trials: list[Trial], runs_dir: Path) -> None:
    """A trial still to run whose upstream run is completed but holds no weights (a record committed without
    them, as a fresh clone has it) cannot start: one line, before anything is written, says which run and how to
    retrain it without touching the record."""
    for trial in trials:
        if _completed(runs_dir, trial.run_id):
            continue
        for up in trial.upstream:
            if _completed(runs_dir, up) and not has_weights(run_dir(runs_dir, up)):
                raise UserError(f"upstream run '{up}' in {runs_dir} is completed but its weights are not there "
                                f"(committed records carry no checkpoints), so trial {trial.run_id} cannot start: "
                                f"retrain the pipeline in a new runs directory, `unihetero sweep launch {spec.name} "
                                f"--preset {spec.scale} --runs-dir NEW_DIR` (the same run ids; {runs_dir} stays "
                                "as it is)")


def _tasks(trials: list[Trial], runs_dir: Path, retry_failed: bool) -> list[TrialTask]:
    return [TrialTask(str(run_dir(runs_dir, t.run_id)), t.config.to_dict(), retry_failed=retry_failed,
                      upstream=tuple(str(run_dir(runs_dir, u)) for u in t.upstream)) for t in trials]


def _completed(runs_dir: Path, run_id: str) -> bool:
    return trial_run_state(run_dir(runs_dir, run_id)) == "completed"
