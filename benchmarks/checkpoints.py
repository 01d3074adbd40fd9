"""Checkpoint bytes each rank writes: one file gathered to rank 0 (full) against sharded (torch.distributed.checkpoint),
for a 2-rank FSDP run of tiny random transformers backbones with a frozen encoder and VAE (left out of a sharded
checkpoint). Bytes, not seconds: the figure does not depend on how loaded the machine is.

    python -m benchmarks.checkpoints      -> benchmarks/results/checkpoints-<machine>.json
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp

from benchmarks.common import write_result
from study.config import RunConfig, load_config
from study.runstore import RunStore
from study.train import train
from unihetero.cli import main as cli

WORLD = 2


def _worker(rank: int, port: int, cfg: RunConfig, run_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    train(cfg, run_dir, quiet=True)
    sys.stderr.flush()
    os._exit(0)  # FSDP2 over gloo can abort in interpreter teardown; the run is written


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _numel(size: Sequence[int]) -> int:
    return math.prod(size)


def bytes_per_rank(checkpoint: Path) -> tuple[list[int], list[int]]:
    """Bytes each rank wrote, and the tensor payload among them (the rest is each tensor's serialisation overhead,
    a few KB, which dominates at these tiny sizes and vanishes at full scale). A full checkpoint is rank 0's alone; a
    sharded one's __<rank>_0.distcp files, rank 0 also writing the metadata, trainer.pt and sources.json."""
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True)
        tensors = [t for part in ("model", "optimizer") for t in _tensors(state[part])]
        return [checkpoint.stat().st_size] + [0] * (WORLD - 1), [sum(t.nbytes for t in tensors)] + [0] * (WORLD - 1)
    written, payload = [0] * WORLD, [0] * WORLD
    for file in checkpoint.iterdir():
        written[_writer(file.name)] += file.stat().st_size
    meta = dcp.FileSystemReader(checkpoint).read_metadata()
    for index, info in meta.storage_data.items():
        item = meta.state_dict_metadata[index.fqn]
        chunk = next(c for c in item.chunks if c.offsets == index.offset)
        payload[_writer(info.relative_path)] += _numel(chunk.sizes) * item.properties.dtype.itemsize
    return written, payload


def _writer(name: str) -> int:
    return int(name[2:].split("_")[0]) if name.endswith(".distcp") else 0


def _tensors(tree: object) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in _tensors(v)]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in _tensors(v)]
    return []


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        assert cli(["hf", "tiny", str(root / "hf")]) == 0
        assert cli(["data", "shards", str(root / "shards"), "--world", "64", "--config", "tiny",
                    "--shard-size", "16"]) == 0
        hf = root / "hf"
        base = ["model.backbone=hf", f"model.vision_path={hf / 'dinov2'}", f"model.llm_path={hf / 'qwen2'}",
                f"model.vae_path={hf / 'vae'}", "model.freeze_encoder=true", "objective.target=semantic_input+pixel",
                "objective.pixel_head=mse", "data.source=shards", f"data.shards={root / 'shards'}",
                "data.unique_samples=48", "train.samples_seen=80", "train.batch_size=16", "train.parallel=fsdp",
                "train.threads=1", "eval.num_images=16"]
        rows = {}
        for fmt in ("full", "sharded"):
            cfg = load_config("tiny", [*base, f"train.checkpoint_format={fmt}"])
            run = root / fmt
            mp.spawn(_worker, args=(_port(), cfg, str(run)), nprocs=WORLD)
            written, payload = bytes_per_rank(RunStore(run).checkpoints()[-1])
            rows[fmt] = {"bytes_per_rank": written, "tensor_payload_per_rank": payload,
                         "largest_rank_payload": max(payload), "total_payload": sum(payload)}
    full, sharded = rows["full"], rows["sharded"]
    result = {"world": WORLD, "config": "tiny hf (dinov2, qwen2, vae), frozen encoder, fsdp, fp32", "formats": rows,
              "largest_rank_payload_ratio_sharded_vs_full":
                  sharded["largest_rank_payload"] / full["largest_rank_payload"],
              "total_payload_ratio_sharded_vs_full": sharded["total_payload"] / full["total_payload"]}
    print(json.dumps(result, indent=1))
    write_result("checkpoints", result)
    return result


if __name__ == "__main__":
    main()
