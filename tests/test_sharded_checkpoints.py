"""Sharded checkpoints (torch.distributed.checkpoint): each rank writes its own shards, frozen modules loaded from
disk are left out and checked on resume, and a run resumes on another number of ranks as if never stopped."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from study.checkpoint import fingerprint, load_latest
from study.config import load_config
from study.errors import UserError
from study.runstore import RunStore
from study.train import train
from tests.rank_runs import assert_same_training, rank_config, spawn_ranks
from unihetero.cli import main

ROOT = Path(__file__).parents[1]
EVAL_TOL = 1e-4  # relative, on the final evaluation's metrics: FSDP's 2-rank sums differ from 1 rank's in rounding


def _hf_overrides(tiny_hf: dict[str, str], shards: Path) -> list[str]:
    return ["model.backbone=hf", f"model.vision_path={tiny_hf['dinov2']}", f"model.llm_path={tiny_hf['qwen2']}",
            f"model.vae_path={tiny_hf['vae']}", "model.freeze_encoder=true", "objective.target=semantic_input+pixel",
            "objective.pixel_head=mse", "data.source=shards", f"data.shards={shards}", "data.unique_samples=64",
            "data.shuffle_buffer=16", "train.samples_seen=640", "train.batch_size=16", "train.checkpoint_every=5",
            "train.parallel=fsdp", "train.threads=1", "eval.every=20", "eval.num_images=16"]


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_dir():
        assert proc.poll() is None, f"the run ended before {path.name} was written: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_killed_two_rank_torchrun_run_resumes_on_one_rank_to_the_same_final_evaluation(tiny_hf, tmp_path):
    shards = tmp_path / "shards"
    assert main(["data", "shards", str(shards), "--world", "96", "--config", "tiny", "--shard-size", "16"]) == 0
    overrides = _hf_overrides(tiny_hf, shards)
    cfg = load_config("tiny", overrides)
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "unihetero.cli", "train", "tiny", *overrides, "--runs-dir", str(runs), "--quiet"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    run = runs / cfg.run_id()
    try:
        _wait_for(run / "checkpoints" / "step_00000010", proc)
    finally:  # both ranks (torchrun starts each in a session of its own) and torchrun, mid-run
        for pid in [*_children(proc.pid), proc.pid]:
            os.kill(pid, signal.SIGKILL)
        proc.wait()
    store = RunStore(run)
    assert store.status()["state"] == "running" and store.status()["world_size"] == 2
    newest = store.checkpoints()[-1]
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata"} <= {p.name for p in newest.iterdir()}
    saved = dcp.FileSystemReader(newest).read_metadata().state_dict_metadata
    assert any(k.startswith("model.llm.") for k in saved)
    assert not any(k.startswith(("model.encoder.", "model.latents.")) for k in saved)  # frozen, from disk
    sources = json.loads((newest / "sources.json").read_text())["frozen"]
    assert sources["encoder."]["fingerprint"] == fingerprint(tiny_hf["dinov2"])
    assert sources["latents."]["path"] == tiny_hf["vae"]

    train(cfg, run, quiet=True)  # resumed in one process
    reference = train(cfg, tmp_path / "one" / cfg.run_id(), quiet=True)
    status = store.status()
    assert status["state"] == "completed" and status["world_size"] == 1
    resumed, whole = store.records("eval.jsonl")[-1], RunStore(reference).records("eval.jsonl")[-1]
    assert resumed["step"] == whole["step"] == 40 and resumed.keys() == whole.keys()
    compared = [k for k, v in whole.items() if isinstance(v, float)]
    assert {"caption_loss", "pixel_loss"} <= set(compared)
    for key in compared:
        assert resumed[key] == pytest.approx(whole[key], rel=EVAL_TOL, abs=1e-6), key
    assert whole["caption_loss"] < RunStore(reference).records("eval.jsonl")[0]["caption_loss"] - 0.5  # it learned


@pytest.mark.filterwarnings("error:torch.distributed is disabled")  # one process is meant: no warning, from any thread
def test_one_process_sharded_resume_is_exact_and_keeps_two(tmp_path):
    """One process, sharded and written in the background: a resume matches an unbroken run bit for bit; a write
    killed before its rename is cleaned away; the last two checkpoints are kept."""
    reference = train(rank_config(), tmp_path / "whole", quiet=True)
    cfg = rank_config("train.checkpoint_format=sharded", "train.checkpoint_async=true", "train.checkpoint_every=2")
    run = train(cfg, tmp_path / "run", until_step=4, quiet=True)
    killed_write = run / "checkpoints" / ".step_00000006.tmp"
    killed_write.mkdir()
    (killed_write / "__0_0.distcp").write_bytes(b"partial")
    train(cfg, run, quiet=True)
    assert not killed_write.exists()
    assert [p.name for p in RunStore(run).checkpoints()] == ["step_00000004", "step_00000006"]
    a, b = load_latest(RunStore(run))["model"], load_latest(RunStore(reference))["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert_same_training(run, reference)


@pytest.mark.slow
def test_a_one_rank_sharded_checkpoint_resumes_on_two_fsdp_ranks(tmp_path):
    reference = train(rank_config(), tmp_path / "whole", quiet=True)
    cfg = rank_config("train.checkpoint_format=sharded", "train.parallel=fsdp")
    run = train(cfg, tmp_path / "run", until_step=3, quiet=True)
    spawn_ranks(cfg, run)
    assert RunStore(run).status()["world_size"] == 2
    assert_same_training(run, reference)


def test_a_resume_over_changed_frozen_weights_is_refused(tmp_path):
    encoder = tmp_path / "encoder.pt"
    torch.manual_seed(0)
    source = train(rank_config("train.samples_seen=32"), tmp_path / "source", quiet=True)
    torch.save(load_latest(RunStore(source))["model"], encoder)
    cfg = rank_config(f"model.encoder_checkpoint={encoder}", "model.freeze_encoder=true",
                  "train.checkpoint_format=sharded")
    run = train(cfg, tmp_path / "run", until_step=3, quiet=True)
    saved = dcp.FileSystemReader(RunStore(run).checkpoints()[-1]).read_metadata().state_dict_metadata
    assert not any(k.startswith("model.encoder.") for k in saved)
    weights = torch.load(encoder, weights_only=True)
    torch.save({k: v + 1 if k.startswith("encoder.") else v for k, v in weights.items()}, encoder)
    with pytest.raises(UserError, match="config key 'model.encoder_checkpoint': .* is not the file set"):
        train(cfg, run, quiet=True)
    assert RunStore(run).status()["step"] == 3  # nothing written over
