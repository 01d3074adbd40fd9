"""Achieved model FLOPs/s as a fraction of this machine's matmul peaks, measured in the same run.

Peaks: the best of several large fp32 and bf16 matmuls. Achieved: analytic training FLOPs (every
component, study.model.flops) times the samples/s of a plain training loop, per preset and precision.
Target: >= 0.35 of the fp32 peak for the largest CPU preset. A profile names what limits it.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import write_result
from benchmarks.train_step import reference_rate
from study.config import RunConfig, load_config
from study.data.loader import TrainStream
from study.data.worlds import build_world
from study.model.flops import train_flops_per_sample

CASES = {"cpu-small": [], "cpu-small@medium": ["model.size=medium"]}  # the largest CPU size: medium


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 6) -> float:
    """The best FLOP/s of an n x n matmul in `dtype` over `repeats` tries."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def padded_caption_tokens(cfg: RunConfig, batches: int = 8) -> float:
    """Mean padded caption length of the batches the training loop sees (what it computes on)."""
    stream = TrainStream(cfg, build_world(cfg.data), 0, prefetch=False)
    return sum(b.tokens.shape[1] for _, b in zip(range(batches), stream, strict=False)) / batches


def profile_top(cfg: RunConfig, rows: int = 8) -> list[dict]:
    """The operators that take the most CPU time in a few training steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        reference_rate(cfg)
    table = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    return [{"op": e.key, "share": e.self_cpu_time_total / total} for e in table]


def main() -> dict:
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows = []
    for name, overrides in CASES.items():
        for precision in ("fp32", "bf16"):
            cfg = load_config("cpu-small", [*overrides, f"train.precision={precision}"])
            rate = reference_rate(cfg)
            flops = rate * train_flops_per_sample(cfg, padded_caption_tokens(cfg))
            rows.append({"preset": name, "precision": precision, "samples_per_s": rate, "model_flops_per_s": flops,
                         "fraction_of_fp32_peak": flops / peaks["fp32"],
                         "fraction_of_bf16_peak": flops / peaks["bf16"]})
            print(f"hardware [{name} {precision}]: {flops / 1e9:.0f} GFLOP/s = {flops / peaks['fp32']:.2f} of fp32 "
                  f"peak, {flops / peaks['bf16']:.2f} of bf16 peak")
    largest = [r for r in rows if r["preset"] == "cpu-small@medium"]
    best = max(largest, key=lambda r: r["fraction_of_fp32_peak"])
    result = {"peaks_flops_per_s": peaks, "rows": rows, "target": 0.35,
              "met": best["fraction_of_fp32_peak"] >= 0.35,
              "profile": profile_top(load_config("cpu-small", [*CASES["cpu-small@medium"],
                                                               f"train.precision={best['precision']}"]))}
    print(f"peaks fp32 {peaks['fp32'] / 1e9:.0f} bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s -> "
          f"{write_result('hardware', result)}")
    return result


if __name__ == "__main__":
    main()
