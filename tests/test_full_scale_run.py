"""The full-scale code path end to end on CPU: tiny random transformers backbones and a tiny KL VAE, trained on
WebDataset shards that the test writes, through `study.train.train`."""

import json

from study.config import load_config
from study.runstore import RunStore
from study.train import train
from unihetero.cli import main


def test_hf_backbones_on_shards_train_and_caption_loss_falls(tiny_hf, tmp_path):
    shards = tmp_path / "shards"
    assert main(["data", "shards", str(shards), "--world", "96", "--config", "tiny", "--shard-size", "16"]) == 0
    assert json.loads((shards / "index.json").read_text())["samples"] == 96
    cfg = load_config("tiny", [
        "model.backbone=hf", f"model.vision_path={tiny_hf['dinov2']}", f"model.llm_path={tiny_hf['qwen2']}",
        f"model.vae_path={tiny_hf['vae']}", "objective.target=semantic_input+pixel",
        "data.source=shards", f"data.shards={shards}", "data.unique_samples=64", "data.shuffle_buffer=32",
        "train.samples_seen=320", "train.batch_size=16", "eval.every=10", "eval.num_images=16"])
    run = train(cfg, tmp_path / "run", quiet=True)

    store = RunStore(run)
    assert store.status()["state"] == "completed"
    metrics, evals = store.records("metrics.jsonl"), store.records("eval.jsonl")
    assert [m["step"] for m in metrics] == list(range(5, 21, 5))
    assert all(k in metrics[-1] for k in ("loss/caption", "loss/semantic", "loss/pixel", "flops", "tokens_seen"))
    assert [e["step"] for e in evals] == [0, 10, 20]
    first, last = evals[0], evals[-1]
    assert last["caption_loss"] < first["caption_loss"] - 0.5  # held-out caption loss falls
    assert metrics[-1]["loss/caption"] < metrics[0]["loss/caption"]  # and so does the training one
    assert last["pixel_loss"] < first["pixel_loss"] and "sem/cos" in last
    assert last["data/eval_samples"] == 16 and last["data/corrupt_skipped"] == 0
    assert not (run / "inference_scaling.json").exists()  # world-only evaluations stay off on shards
