"""Shared by the reliability tests: a small run configuration, its uninterrupted reference run, and the
comparison that says two runs ended identically (nothing lost, nothing changed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from study.checkpoint import load_latest
from study.config import RunConfig, load_config
from study.runstore import RunStore
from tests.conftest import deterministic

# 20 steps of 16 images, a checkpoint every 5 steps, a quick evaluation
RUN_OVERRIDES = ("train.samples_seen=320", "train.checkpoint_every=5", "eval.num_images=4",
                 "eval.probe_images=20", "eval.inference_scaling=false")


def run_config() -> RunConfig:
    return load_config("tiny", list(RUN_OVERRIDES))


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> Path:
    """The run of `run_config()`, uninterrupted (trained once per session)."""
    from study.train import train

    return train(run_config(), tmp_path_factory.mktemp("reference") / "run", quiet=True)


def assert_same_run(expected: Path, actual: Path) -> None:
    """`actual` completed with exactly the final weights, metrics, evaluations and status of `expected`."""
    a, b = RunStore(expected), RunStore(actual)
    assert b.status()["state"] == "completed", b.status()
    assert b.status()["final"] == a.status()["final"]
    wa, wb = load_latest(a)["model"], load_latest(b)["model"]
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert deterministic(b.records("metrics.jsonl")) == deterministic(a.records("metrics.jsonl"))
    assert b.records("eval.jsonl") == a.records("eval.jsonl")
