"""GPU throughput of the real trainer: `study.train.train` at full-scale shapes, beside a bare loop of the same model.

The backbones are written from config with random weights (nothing downloaded): a DINOv2-L/14-like encoder at
224 px (256 visual tokens, frozen as in the `full-dinov2-qwen2` preset) and Qwen2-like LLMs of about 0.5B and 1.5B
parameters; the data are world-v2 images at 224 px with captions of about 48 words, written as shards. Each row
trains the `full-dinov2-qwen2` preset (semantic_input, bf16, sdpa, activation checkpointing) on one device through
`study.train.train`, with `train.compile` off and on, and records from the trainer's own metrics records:
tokens/s and model FLOPs/s (every component counted, `study.model.flops`), MFU against the bf16 matmul peak measured
in the same run and against the card's datasheet peak, peak memory, and the seconds of an evaluation of the held-out
images (2,048). The bare loop, written here, trains the same model (same blocks checkpointed and compiled) on the
same batches already in memory: forward, backward, clip, fused AdamW, nothing else; `trainer_over_bare` is the
ratio of their tokens/s. Checkpoint writes are left out of the trainer's runs (`benchmarks/checkpoints.py` measures
them). Targets (issue 18): MFU >= 0.35 at ~1.5B on an H100/H200, trainer >= 0.95 of the bare loop, an evaluation
of 2,048 images in under 2 minutes.

    python -m benchmarks.gpu_train [OUT_DIR] [--smoke]   -> OUT_DIR/gpu_train-<card>.json (default benchmarks/results)

`--smoke` runs the same code at tiny shapes on the CPU (`tests/test_gpu_benchmark.py`); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

import study.loop as loop_module
import study.vlm as vlm_module
from study.config import RunConfig, load_config
from study.data.loader import training_stream
from study.data.shard_writer import world_samples, write_shards
from study.data.worlds import build_world
from study.distributed import transformer_blocks
from study.draws import step_generator
from study.inputs import prepare
from study.loop import build_optimizer
from study.model.flops import train_flops_per_sample
from study.model.hf_tiny import VOCAB_SIZE, world_tokenizer, write_preprocessor
from study.objectives import compute_losses
from study.rebuild import build_model
from study.runstore import RunStore
from study.train import train

VISION = {"full": dict(image_size=224, patch_size=14, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                       mlp_ratio=4),  # DINOv2-L/14
          "smoke": dict(image_size=28, patch_size=7, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        mlp_ratio=2)}
LLMS = {"full": {"qwen2-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                                    num_key_value_heads=2, intermediate_size=4864, vocab_size=151_936),
                 "qwen2-1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                                    num_key_value_heads=2, intermediate_size=8960, vocab_size=151_936)},
        "smoke": {"qwen2-tiny": dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                                     num_key_value_heads=1, intermediate_size=96, vocab_size=VOCAB_SIZE)}}
SCALES = {"full": dict(batch=64, steps=40, skip=20, log_every=5, images=2048, caption_words=48, workers=8,
                       compile=(False, True)),
          "smoke": dict(batch=8, steps=6, skip=2, log_every=2, images=16, caption_words=12, workers=0,
                        compile=(False,))}
SPEC_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peaks (datasheets)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def bf16_peak(device: torch.device) -> float:
    """FLOP/s of a large bf16 matmul on `device`."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 10 * 2 * n**3 / (time.perf_counter() - t)


def write_backbones(out: Path, scale: str, device: torch.device) -> dict[str, Path]:
    """Random-weight checkpoints in the real format (bf16 on disk), built on `device`."""
    import transformers as tf

    torch.manual_seed(0)
    paths = {"dinov2": out / "dinov2"}
    with torch.device(device):
        vision = tf.Dinov2Model(tf.Dinov2Config(**VISION[scale]))
    vision.to(torch.bfloat16).save_pretrained(paths["dinov2"])
    write_preprocessor(paths["dinov2"], "BitImageProcessor", VISION[scale]["image_size"])
    del vision
    for name, dims in LLMS[scale].items():
        with torch.device(device):
            lm = tf.Qwen2ForCausalLM(tf.Qwen2Config(**dims, max_position_embeddings=4096, tie_word_embeddings=True,
                                                    bos_token_id=1, eos_token_id=2, pad_token_id=0))
        paths[name] = out / name
        lm.to(torch.bfloat16).save_pretrained(paths[name])
        world_tokenizer().save_pretrained(paths[name])
        del lm
    return paths


def write_data(out: Path, scale: str) -> Path:
    """Two shards of world-v2 images at the encoder's side, captions lengthened to about `caption_words` words: the
    first for training, the second held out."""
    s = SCALES[scale]
    v = VISION[scale]
    cfg = load_config("cpu-v2", [f"data.image_size={v['image_size']}", f"model.patch_size={v['patch_size']}"])

    def lengthened(caption: str) -> str:
        words = caption.split()
        return " ".join((words * (s["caption_words"] // len(words) + 1))[: s["caption_words"]])

    rendered = world_samples(build_world(cfg.data), 2 * s["images"])
    samples = ((ext, data, lengthened(caption)) for ext, data, caption in rendered)
    write_shards(samples, out / "shards", s["images"])
    return out / "shards"


def run_config(paths: dict[str, Path], llm: str, shards: Path, scale: str, compiled: bool,
               device: torch.device) -> RunConfig:
    """The benchmark's run config: tiny pretrained-format backbones on shards, at one scale."""
    s = SCALES[scale]
    return load_config("full-dinov2-qwen2", [
        f"model.vision_path={paths['dinov2']}", f"model.llm_path={paths[llm]}", f"data.shards={shards}",
        f"data.unique_samples={s['images']}", "data.held_out_shards=1", "data.shuffle_buffer=256",
        f"data.workers={s['workers']}", f"train.batch_size={s['batch']}",
        f"train.samples_seen={s['batch'] * s['steps']}", "train.warmup_steps=2", f"train.log_every={s['log_every']}",
        "train.checkpoint_every=0",
        f"train.compile={str(compiled).lower()}", f"train.device={device.type}", f"eval.num_images={s['images']}",
        "eval.every=0"])


def trainer_row(cfg: RunConfig, run_dir: Path, scale: str, device: torch.device) -> dict:
    """Train through `study.train.train`; rates from its metrics records after the first `skip` steps, the seconds
    of its final evaluation, and its peak memory."""
    s = SCALES[scale]
    eval_seconds, evaluate = [], vlm_module.evaluate
    save = loop_module.Checkpointer.save

    def timed_evaluate(*args, **kwargs) -> dict:
        sync(device)
        t = time.perf_counter()
        out = evaluate(*args, **kwargs)
        sync(device)
        eval_seconds.append(time.perf_counter() - t)
        return out

    vlm_module.evaluate, loop_module.Checkpointer.save = timed_evaluate, lambda *args, **kwargs: None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        train(cfg, run_dir, quiet=True)
    finally:
        vlm_module.evaluate, loop_module.Checkpointer.save = evaluate, save
    records = RunStore(run_dir).records("metrics.jsonl")
    first = next(i for i, r in enumerate(records) if r["step"] >= s["skip"])
    kept = records[first + 1:]
    seconds = sum((r["step"] - p["step"]) * cfg.train.batch_size / r["samples_per_s"]
                  for p, r in zip(records[first:], kept, strict=False))
    return {"state": RunStore(run_dir).status()["state"], "steps_timed": kept[-1]["step"] - records[first]["step"],
            "tokens_per_s": (kept[-1]["tokens_seen"] - records[first]["tokens_seen"]) / seconds,
            "model_flops_per_s": (kept[-1]["flops"] - records[first]["flops"]) / seconds,
            "eval_seconds": eval_seconds[-1], "eval_images": cfg.eval.num_images,
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}


def bare_loop_row(cfg: RunConfig, run_dir: Path, scale: str, device: torch.device) -> dict:
    """The same model trained on the same batches, already in memory, by a loop of its own."""
    s = SCALES[scale]
    stream = training_stream(cfg, None, 0, run_dir)
    batches = [batch for _, batch in zip(range(min(s["steps"], 8)), stream, strict=False)]
    stream.close()
    torch.manual_seed(cfg.train.seed)
    model = build_model(prepare(cfg, run_dir.parent)).to(device)
    for block in transformer_blocks(model):
        if cfg.train.activation_checkpointing:
            block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
        if cfg.train.compile:
            block.compile()
    opt = build_optimizer(model, cfg)
    model.train()
    tokens = flops = 0.0
    for step in range(s["steps"]):
        if step == s["skip"]:
            sync(device)
            start, tokens, flops = time.perf_counter(), 0.0, 0.0
        batch = batches[step % len(batches)]
        images = batch.images.to(device, non_blocking=True).float().div_(255)
        ids = batch.tokens.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = compute_losses(model, cfg, images, ids, None, step_generator(0, step, 1, device))["total"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += float((batch.tokens != model.pad_id).sum()) + model.num_visual * len(batch.tokens)
        flops += len(batch.tokens) * train_flops_per_sample(cfg, batch.tokens.shape[1])
    sync(device)
    seconds = time.perf_counter() - start
    return {"tokens_per_s": tokens / seconds, "model_flops_per_s": flops / seconds,
            "params": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def main(out_dir: str = "benchmarks/results", scale: str = "full") -> dict:
    device = torch.device("cuda" if scale == "full" else "cpu")
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    spec = next((v for k, v in SPEC_BF16.items() if k in card), None)
    peak = bf16_peak(device)
    work = Path(tempfile.mkdtemp(prefix="gpu_train-"))
    rows = []
    try:
        paths, shards = write_backbones(work, scale, device), write_data(work, scale)
        for llm in LLMS[scale]:
            for compiled in SCALES[scale]["compile"]:
                cfg = run_config(paths, llm, shards, scale, compiled, device)
                row = {"llm": llm, "compile": compiled, "batch": cfg.train.batch_size, "attention": cfg.model.attention}
                run_dir = work / "runs" / f"{llm}-{compiled}"
                try:
                    trainer = trainer_row(cfg, run_dir, scale, device)
                    bare = bare_loop_row(cfg, run_dir, scale, device)
                except Exception as e:  # recorded, not hidden: a size or compile that fails on this card
                    row["error"] = f"{e.__class__.__name__}: {str(e)[:300]}"
                else:
                    row.update(trainer, params=bare["params"], trainable=bare["trainable"],
                               bare_tokens_per_s=bare["tokens_per_s"],
                               trainer_over_bare=trainer["tokens_per_s"] / bare["tokens_per_s"],
                               mfu_measured_peak=trainer["model_flops_per_s"] / peak,
                               mfu_spec=trainer["model_flops_per_s"] / spec if spec else None)
                shutil.rmtree(run_dir, ignore_errors=True)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"card": card, "torch": torch.__version__, "scale": scale, "bf16_matmul_peak_flops": peak,
              "spec_bf16_flops": spec, "rows": rows,
              "targets": {"mfu_1.5b": 0.35, "trainer_over_bare": 0.95, "eval_2048_images_s": 120}}
    path = Path(out_dir) / f"gpu_train-{card.replace(' ', '-')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"-> {path}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="benchmarks/results")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: checks the code, not the card")
    args = parser.parse_args()
    main(args.out_dir, "smoke" if args.smoke else "full")
