"""GPU training throughput: tokens/s, model FLOPs utilisation (every component counted) and peak memory,
for the miniature model and a ~150M-parameter LLM preset, per attention kernel, with and without
torch.compile. The bf16 peak is a large matmul measured in the same run.

    python -m benchmarks.gpu_train [OUT_DIR]     -> OUT_DIR/gpu-<card>.json (default benchmarks/results)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from study.config import load_config
from study.data.loader import TrainStream
from study.model.flops import train_flops_per_sample
from study.model.unified import UnifiedModel
from study.objectives import compute_losses
from study.train import build_optimizer

PRESETS = {"miniature (cpu-small, 1.3M)": ["train.batch_size=256"],
           "large (~150M LLM)": ["model.size=large", "train.batch_size=64"]}
KERNELS = ("sdpa", "xformers", "reference")  # a kernel that cannot run here is a row with its error
WARMUP, STEPS = 5, 20


def _xformers_version() -> str:
    try:
        import xformers
    except ImportError:
        return "not installed"
    return xformers.__version__


def bf16_peak(n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 10 * 2 * n**3 / (time.perf_counter() - t)


def measure(overrides: list[str], kernel: str, compiled: bool) -> dict:
    cfg = load_config("cpu-small", [*overrides, f"model.attention={kernel}", "objective.target=semantic_input"])
    torch.manual_seed(0)
    model = UnifiedModel(cfg).cuda()
    opt = build_optimizer(model, cfg)
    batch = next(iter(TrainStream(cfg, 0, prefetch=False)))
    images, tokens = batch.images.cuda(), batch.tokens.cuda()
    step_losses = torch.compile(compute_losses) if compiled else compute_losses

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_losses(model, cfg, images, tokens, None, None)["total"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(WARMUP):
        step()
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(STEPS):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - t) / STEPS
    b = images.shape[0]
    tokens_per_step = b * (model.num_visual + tokens.shape[1])
    flops = b * train_flops_per_sample(cfg, tokens.shape[1])
    return {"params": sum(p.numel() for p in model.parameters()), "batch": b, "step_s": seconds,
            "tokens_per_s": tokens_per_step / seconds, "model_flops_per_s": flops / seconds,
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30, "warmup_s": warmup_s}


def main(out_dir: str = "benchmarks/results") -> dict:
    card = torch.cuda.get_device_name().replace(" ", "-")
    peak = bf16_peak()
    rows = []
    for preset, overrides in PRESETS.items():
        for kernel in KERNELS:
            for compiled in (False, True):
                row = {"preset": preset, "attention": kernel, "compile": compiled}
                try:
                    row.update(measure(overrides, kernel, compiled))
                    row["mfu"] = row["model_flops_per_s"] / peak
                except Exception as e:  # recorded, not hidden: a kernel or compile that fails here
                    row["error"] = f"{e.__class__.__name__}: {str(e)[:200]}"
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "bf16_matmul_peak_flops": peak,
              "xformers": _xformers_version(), "rows": rows}
    path = Path(out_dir) / f"gpu-{card}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"-> {path}")
    return result


if __name__ == "__main__":
    main(*sys.argv[1:])
