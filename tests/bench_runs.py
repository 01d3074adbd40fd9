"""The trained run the benchmark tests score, and the `unihetero bench` call they make."""

from __future__ import annotations

from pathlib import Path

from study.train import train
from tests.conftest import tiny_config
from unihetero.cli import main

WORLD = ("data.world_version=2", "data.caption_coverage=1.0", "train.threads=1")


def train_bench_run(root: Path) -> Path:
    """A tiny run trained for 1,500 steps: it learns colour and count (about 20 s)."""
    cfg = tiny_config(*WORLD, "train.samples_seen=24000", "train.checkpoint_every=0")
    return train(cfg, root / "run", quiet=True)


def bench(run: Path, *args: str) -> int:
    """`unihetero bench RUN ARGS...`, its exit code."""
    return main(["bench", str(run), *args])
