"""W&B's offline run directories of a run and their records, read from W&B's own transaction logs."""

from __future__ import annotations

from pathlib import Path

from study import wandb_log


def wandb_history(run_dirs: list[Path]) -> list[dict]:
    """Every history row of these offline run directories (one W&B run written in several sessions), in order."""
    return wandb_log.history(p for d in run_dirs for p in sorted(d.glob("*.wandb")))


def run_records(run_dirs: list[Path], kind: str) -> list:
    """The records of one kind ('run', 'metric', ...) of these offline run directories."""
    return [getattr(r, kind) for d in run_dirs for p in d.glob("*.wandb") for r in wandb_log.records(p)
            if r.WhichOneof("record_type") == kind]
