"""`make bench`: run every benchmark side by side with its reference, write
benchmarks/results/<machine>.json and a Markdown table benchmarks/results/<machine>.md."""

from __future__ import annotations

import json
import sys
import time

from benchmarks import analysis_speed, data_throughput, dispatch, fitting, hardware, memory, train_step
from benchmarks.common import RESULTS, machine


def table(results: dict) -> str:
    """The benchmark results as a markdown table of ratios against their references (`results/<machine>.md`)."""
    lines = ["| figure | measured | reference | ratio | target | met |", "|---|---|---|---|---|---|"]
    for key, world in (("train_step", ""), ("train_step_v2", " (world v2, cpu-v2)")):
        rows = results.get(key, {}).get("rows", [])
        for row in rows:
            lines.append(f"| train step{world}, {row['objective']} | {row['toolkit_samples_per_s']:.0f} samples/s | "
                         f"{row['reference_samples_per_s']:.0f} samples/s (hand loop) | {row['ratio']:.3f} | >= 0.98 "
                         f"| {'yes' if row['met'] else 'no'} |")
        for row in rows:
            if "loop_only_ratio" in row:
                lines.append(f"| train loop alone (pre-rendered batches){world}, {row['objective']} | - | hand loop | "
                             f"{row['loop_only_ratio']:.3f} | - | - |")
        for row in rows:
            if "render_share_of_reference_step" in row:
                lines.append(f"| render one batch{world}, {row['objective']} | {row['render_ms_per_batch']:.1f} ms | "
                             f"a hand-loop step | {row['render_share_of_reference_step']:.3f} | <= 0.02 (v2) | "
                             f"{'yes' if row['render_share_of_reference_step'] <= 0.02 else 'no'} |")
    hw = results["hardware"]
    peaks = {k: v / 1e9 for k, v in hw["peaks_flops_per_s"].items()}
    for row in hw["rows"]:
        largest = row["preset"].endswith("medium")
        met = ("yes" if row["fraction_of_fp32_peak"] >= 0.35 else "no") if largest else "-"
        lines.append(f"| model FLOP/s, {row['preset']} {row['precision']} | {row['model_flops_per_s'] / 1e9:.0f} "
                     f"GFLOP/s | fp32 peak {peaks['fp32']:.0f}, bf16 peak {peaks['bf16']:.0f} GFLOP/s | "
                     f"{row['fraction_of_fp32_peak']:.2f} of fp32, {row['fraction_of_bf16_peak']:.2f} of bf16 | "
                     f">= 0.35 of fp32 (largest preset) | {met} |")
    d = results["data"]
    lines.append(f"| data: render (1 core) vs train | {d['render_images_per_s_one_core']:.0f} img/s | "
                 f"{d['train_samples_per_s']:.0f} samples/s | {d['ratio']:.1f}x | >= 10x | "
                 f"{'yes' if d['met'] else 'no'} |")
    m = results["memory"]
    lines.append(f"| peak RSS, D=1e6 vs D=1e3 | {m['peak_rss_mb_D1e6']:.0f} MB | {m['peak_rss_mb_D1e3']:.0f} MB | "
                 f"{m['ratio']:.3f} | within 5% | {'yes' if m['met'] else 'no'} |")
    for name, row in results["dispatch"]["backends"].items():
        if "overhead_per_trial_s" in row:
            lines.append(f"| dispatch overhead, {name} | {row['overhead_per_trial_s']:.2f} s/trial | no-op trial | "
                         f"- | - | - |")
    a = results["analysis"]
    lines.append(f"| analysis: load + aggregate {a['runs']:,} runs x {a['evals_per_run']} evals | "
                 f"{a['toolkit_load_aggregate_s']:.1f} s | {a['pandas_load_aggregate_s']:.1f} s (pandas) | "
                 f"{a['speedup_vs_pandas']:.1f}x | >= 3x | {'yes' if a['speedup_vs_pandas'] >= 3 else 'no'} |")
    lines.append(f"| analysis: whole report without figures, {a['runs']:,} runs | {a['report_without_figures_s']:.1f} s"
                 f" | - | - | < 20 s | {'yes' if a['report_without_figures_s'] < 20 else 'no'} |")
    f = results["fitting"]
    lines.append(f"| bootstrap ({f['bootstrap_resamples']} resamples), {f['workers']} workers vs serial | "
                 f"{f['bootstrap_parallel_s']:.0f} s | {f['bootstrap_serial_s']:.0f} s | {f['speedup']:.2f}x | - | - |")
    return "\n".join(lines)


BENCHMARKS = {"train_step": train_step.main, "train_step_v2": lambda: train_step.main("cpu-v2", "train_step_v2"),
              "hardware": hardware.main, "data": data_throughput.main,
              "memory": memory.main, "dispatch": lambda: dispatch.main([]), "analysis": analysis_speed.main,
              "fitting": lambda: fitting.main("1000")}


def main(names: list[str]) -> None:
    """Run the named benchmarks (all by default) and merge them into this machine's results; each section
    records when it was measured, and the table says so when sections come from different runs."""
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)} (allowed: {', '.join(BENCHMARKS)})")
    path = RESULTS / f"{machine()}.json"
    results = json.loads(path.read_text()) if path.exists() and names else {}
    measured = results.setdefault("measured_at", {})
    for name in names or list(BENCHMARKS):
        results[name] = BENCHMARKS[name]()
        measured[name] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    dates = "; ".join(f"{k}: {v}" for k, v in measured.items())
    (RESULTS / f"{machine()}.md").write_text(f"# Benchmarks on {machine()}\n\n{table(results)}\n\n"
                                             f"Measured ({dates}).\n")
    print(table(results))


if __name__ == "__main__":
    main(sys.argv[1:])
