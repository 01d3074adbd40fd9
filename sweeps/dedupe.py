"""Trials that would train exactly as another run does (`study.effective`): `sweep plan` lists them, and a launch
trains only their representative (the first such trial, or a run of the runs directory that already has that
effective identity), then records each copy as a completed run of its own config whose records are the
representative's, its status naming it (`same_as`). Analysis reads a copy as any run; pairs stay within a grid.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from study.config import RunConfig
from study.effective import effective_id, without_effect
from study.runstore import RunStore
from sweeps.layout import run_dir
from sweeps.spec import Trial

RECORDS = ("metrics.jsonl", "eval.jsonl", "inference_scaling.json", "samples.npz", "zero_shot_answers.npz",
           "upstream.json")


def existing_runs(runs_dir: Path) -> dict[str, str]:
    """Effective identity -> run id of every run directory with a readable config under `runs_dir`."""
    out = {}
    for config in sorted(Path(runs_dir).glob("*/config.yaml")):
        store = RunStore(config.parent)
        try:
            cfg = store.config()
        except Exception:  # an unreadable config is no representative
            continue
        if store.status().get("same_as") is None:
            out.setdefault(effective_id(cfg), config.parent.name)
    return out


def representatives(trials: list[Trial], runs_dir: Path | None = None) -> dict[str, str]:
    """Run id of each trial that trains like another -> the run id of the one that trains (runs already in
    `runs_dir` first, then the earliest trial)."""
    first = existing_runs(runs_dir) if runs_dir is not None else {}
    out = {}
    for t in trials:
        key = effective_id(t.config)
        rep = first.setdefault(key, t.run_id)
        if rep != t.run_id:
            out[t.run_id] = rep
    return out


def changed_keys(cfg: RunConfig) -> list[str]:
    """The keys this config sets that have no effect in it (what makes it a copy)."""
    defaults = RunConfig()
    return [k for k in without_effect(cfg)
            if getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1]) !=
            getattr(getattr(defaults, k.split(".")[0]), k.split(".")[1])]


def record_copy(runs_dir: Path, trial: Trial, rep: str) -> bool:
    """Write the copy's run directory once its representative completed; whether it did."""
    source = RunStore(run_dir(runs_dir, rep))
    status = source.status()
    if status["state"] != "completed":
        return False
    store = RunStore(run_dir(runs_dir, trial.run_id))
    if store.status().get("state") == "completed":
        return True
    store.init(trial.config)
    for name in RECORDS:
        if (source.path / name).exists():
            shutil.copyfile(source.path / name, store.path / name)
    fields = {k: v for k, v in status.items() if k in ("step", "total_steps", "world_size", "final")}
    store.write_status("completed", same_as=rep, no_effect=changed_keys(trial.config), **fields)
    return True
