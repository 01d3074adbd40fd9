"""Evaluation where training runs: a run on shards is evaluated on every rank, each taking its block of every
held-out batch, the loss sums all-reduced; an FSDP-sharded model is evaluated in place (no rank rebuilds or
gathers it). 2 and 3 ranks give the 1-rank evaluation within float rounding."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from study.config import RunConfig
from study.model import unified
from study.runstore import RunStore
from study.train import train
from tests.conftest import free_port, tiny_config
from unihetero.cli import main

COMPARED = ("caption_loss", "semantic_loss", "diag/image_share", "sem/cos")
# 35 held-out images: batches of 64 split unevenly over 2 and 3 ranks
EVAL = ("objective.target=semantic_input", "eval.num_images=35", "train.samples_seen=64", "train.threads=1",
        "data.unique_samples=96", "data.held_out_shards=2")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval_shards") / "shards"
    assert main(["data", "shards", str(out), "--world", "160", "--config", "tiny", "--shard-size", "32"]) == 0
    return out


def _config(shards: Path, *extra: str) -> RunConfig:
    return tiny_config(*EVAL, "data.source=shards", f"data.shards={shards}", *extra)


def _worker(rank: int, world: int, port: int, cfg: RunConfig, run_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    builds, real_init = [0], unified.UnifiedModel.__init__

    def counted(self, *args, **kwargs):
        builds[0] += 1
        real_init(self, *args, **kwargs)

    unified.UnifiedModel.__init__ = counted
    train(cfg, run_dir, quiet=True)
    Path(run_dir, f"builds_{rank}.json").write_text(json.dumps(builds[0]))
    if cfg.train.parallel == "fsdp":  # as in test_distributed: skip the teardown where FSDP2 over gloo may abort
        sys.stderr.flush()
        os._exit(0)


@pytest.mark.slow
@pytest.mark.parametrize("world, parallel", [(2, "fsdp"), (3, "ddp")])
def test_several_ranks_evaluate_in_place_as_one(shards, tmp_path, world, parallel):
    cfg = _config(shards, f"train.parallel={parallel}", "train.batch_size=24")
    reference = train(_config(shards, "train.batch_size=24"), tmp_path / "one", quiet=True)
    run = tmp_path / "several"
    mp.spawn(_worker, args=(world, free_port(), cfg, str(run)), nprocs=world)
    floors = [RunStore(r).records("eval.jsonl")[0] for r in (reference, run)]
    assert floors[0]["step"] == floors[1]["step"] == 0  # the same weights: the init, before any shard is read
    for key in COMPARED:
        assert floors[1][key] == pytest.approx(floors[0][key], abs=1e-6, rel=1e-6), key
    assert floors[1]["data/eval_samples"] == 35
    assert [json.loads((run / f"builds_{r}.json").read_text()) for r in range(world)] == [1] * world
    assert [e["step"] for e in RunStore(run).records("eval.jsonl")] == [0, cfg.steps]


def test_one_rank_evaluation_is_the_mean_over_units(shards):
    """Caption loss on shards: the mean over every held-out next token, whatever the batching."""
    from study.evaluation import heldout
    from study.evaluation.heldout import heldout_metrics
    from study.model.unified import UnifiedModel

    cfg = _config(shards)
    torch.manual_seed(0)
    model = UnifiedModel(cfg).eval()
    gen = torch.Generator().manual_seed(1)
    whole = heldout_metrics(model, cfg, 0, gen, None)
    batch = heldout.BATCH
    try:
        heldout.BATCH = 8
        small = heldout_metrics(model, cfg, 0, torch.Generator().manual_seed(1), None)
    finally:
        heldout.BATCH = batch
    assert small["caption_loss"] == pytest.approx(whole["caption_loss"], rel=1e-6)
    assert small["semantic_loss"] == pytest.approx(whole["semantic_loss"], rel=1e-6)
