"""The CUDA path of the real trainer (bf16 autocast, pinned uint8 shard images, fused AdamW, evaluation on the
device), run where a GPU is present (`scripts/gpu_checks.sh`); skipped elsewhere."""

import pytest
import torch

from study.config import load_config
from study.runstore import RunStore
from study.train import train
from unihetero.cli import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _falls(run) -> tuple[dict, dict]:
    store = RunStore(run)
    assert store.status()["state"] == "completed"
    evals = store.records("eval.jsonl")
    assert evals[-1]["caption_loss"] < evals[0]["caption_loss"] - 0.5  # it learned
    return evals[0], evals[-1]


def test_hf_backbones_on_shards_train_in_bf16_on_the_gpu(tiny_hf, tmp_path):
    shards = tmp_path / "shards"
    assert main(["data", "shards", str(shards), "--world", "96", "--config", "tiny", "--shard-size", "16"]) == 0
    cfg = load_config("tiny", [
        "model.backbone=hf", f"model.vision_path={tiny_hf['dinov2']}", f"model.llm_path={tiny_hf['qwen2']}",
        f"model.vae_path={tiny_hf['vae']}", "objective.target=semantic_input+pixel", "data.source=shards",
        f"data.shards={shards}", "data.unique_samples=64", "data.workers=2", "train.samples_seen=320",
        "train.batch_size=16", "train.precision=bf16", "train.device=cuda", "eval.every=10", "eval.num_images=16"])
    _falls(train(cfg, tmp_path / "run", quiet=True))


@pytest.mark.parametrize("attention", ["sdpa", "xformers"])
def test_world_run_trains_and_evaluates_on_the_gpu(tmp_path, attention):
    if attention == "xformers":
        pytest.importorskip("xformers")
    cfg = load_config("tiny", ["objective.target=semantic_input+pixel", "data.world_version=2",
                               "data.caption_coverage=1.0", "train.samples_seen=1280", "train.precision=bf16",
                               "train.device=cuda", f"model.attention={attention}"])
    run = train(cfg, tmp_path / "run", quiet=True)
    _, last = _falls(run)
    assert last["zs_acc"] > last["chance"] and (run / "samples.npz").exists()  # world evaluation, on the device
