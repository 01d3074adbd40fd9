"""The rank-invariance matrix: every objective and draw of a training step, trained on 1 rank (the reference), on 1
rank in 2 micro-batches (what float rounding alone does), on 2 ranks under DDP and under FSDP (torchrun, gloo), and
killed on one number of ranks then resumed on the other (2 -> 1, 1 -> 2), on the world and on shards.

    python scripts/rank_invariance.py OUT_DIR [--only NAME ...] [--steps N] [--hf]

For each row: the largest absolute difference of a per-step loss from the reference's (and the first step past
1e-5), and the largest relative difference of a final evaluation metric (absolute where the reference's value is
below 1e-3), with the metric's name; the invariant asks for 1e-5 and 1e-4. The first layout, one rank in two
micro-batches, changes nothing but the order of float sums: where a config's training amplifies rounding, that row
shows it without any rank. Rerunning reuses the completed runs (a completed run is not trained again). With --hf,
the tiny transformers backbones on shards too (text, semantic_input and pixel through the VAE). Writes
OUT_DIR/rank_invariance.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))  # run as a script, under torchrun too
LOSS_TOL, EVAL_TOL = 1e-5, 1e-4
BASE = ["train.log_every=1", "train.threads=1", "train.dist_timeout_min=2",
        "eval.num_images=8", "eval.probe_images=40"]
MASKED = ["masking.distribution=truncnorm", "masking.per=sample", "masking.loss_on=masked"]
CONFIGS = {
    "text": ["objective.target=none"],
    "semantic_input": ["objective.target=semantic_input"],
    "semantic_encoder": ["objective.target=semantic_encoder"],
    "pixel_diffusion": ["objective.target=pixel"],
    "mask_fixed": ["objective.target=semantic_input", "masking.distribution=fixed", "masking.p=0.5"],
    "mask_uniform": ["objective.target=semantic_input", "masking.distribution=uniform", "masking.low=0.2",
                     "masking.per=sample"],
    "mask_gaussian": ["objective.target=pixel", "masking.distribution=gaussian", "masking.mean=0.5",
                      "masking.std=0.3", "masking.per=sample"],
    "mask_truncnorm": ["objective.target=semantic_input+pixel", *MASKED],
    "caption_on_clean": ["objective.target=semantic_input+pixel", *MASKED, "masking.caption_on=clean"],
    "semantic_second_pass": ["objective.target=semantic_input", *MASKED, "objective.semantic_grad_to_inputs=false"],
    "grad_accum_2": ["objective.target=semantic_input+pixel", *MASKED, "train.grad_accum=2"],
}
LAYOUTS = ("1 rank, 2 micro-batches", "2 ranks DDP", "2 ranks FSDP", "killed on 2, resumed on 1",
           "killed on 1, resumed on 2")


def worker(job_file: str) -> None:
    """Train one job (in each rank of a torchrun launch, or in one process)."""
    from study.config import load_config
    from study.train import train

    job = json.loads(Path(job_file).read_text())
    train(load_config("tiny", job["overrides"]), job["run_dir"], until_step=job.get("until_step"), quiet=True)
    sys.stderr.flush()
    os._exit(0)  # skip the interpreter teardown where FSDP2 over gloo may abort on a loaded machine


def run(out: Path, name: str, overrides: list[str], ranks: int, until_step: int | None = None) -> Path:
    """Train one configuration on `ranks` processes (up to `until_step`, to resume later) in a worker; its run
    directory."""
    run_dir = out / "runs" / name
    job = out / "jobs" / f"{name}-{ranks}-{until_step}.json"
    job.parent.mkdir(parents=True, exist_ok=True)
    job.write_text(json.dumps({"overrides": overrides, "run_dir": str(run_dir), "until_step": until_step}))
    launcher = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                     "--nproc_per_node", str(ranks)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run([*launcher, str(Path(__file__).resolve()), "--worker", str(job)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"{name} on {ranks} ranks failed: {done.stderr[-2000:]}")
    return run_dir


def records(run_dir: Path, name: str) -> list[dict]:
    """The records of one JSONL file of a run."""
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines() if line.strip()]


def compare(run_dir: Path, reference: Path) -> dict:
    """The largest per-step loss difference and final-evaluation difference of a run from its one-rank reference."""
    a, b = records(run_dir, "metrics.jsonl"), records(reference, "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b], (run_dir, reference)
    per_step = [max(abs(ra[k] - rb[k]) for k in rb if k.startswith("loss/")) for ra, rb in zip(a, b, strict=True)]
    loss = max(per_step)
    parts = next((r["step"] for r, d in zip(b, per_step, strict=True) if d > LOSS_TOL), None)
    final, want = records(run_dir, "eval.jsonl")[-1], records(reference, "eval.jsonl")[-1]
    worst, key = 0.0, ""
    for k, v in want.items():
        if isinstance(v, float) and "seconds" not in k and not isinstance(v, bool):
            diff = abs(final[k] - v) / (abs(v) if abs(v) >= 1e-3 else 1.0)
            if diff > worst:
                worst, key = diff, k
    return {"loss_abs": loss, "parts_at": parts, "eval_rel": worst, "eval_key": key,
            "ok": loss <= LOSS_TOL and worst <= EVAL_TOL}


HF_CONFIGS = ("text", "semantic_input", "pixel_diffusion")


def matrix(out: Path, only: list[str], steps: int, hf: bool) -> list[dict]:
    """Every data source, configuration and layout against its one-rank run: one row each."""
    from unihetero.cli import main as cli

    shards = out / "shards"
    if not shards.exists():
        assert cli(["data", "shards", str(shards), "--world", "96", "--config", "tiny", "--shard-size", "16"]) == 0
    on_shards = ["data.source=shards", f"data.shards={shards}", "data.unique_samples=64", "data.shuffle_buffer=16"]
    sources = {"world": [], "shards": on_shards}
    if hf:
        if not (out / "hf").exists():
            assert cli(["hf", "tiny", str(out / "hf")]) == 0
        sources["shards, hf backbones"] = [*on_shards, "model.backbone=hf", f"model.vision_path={out / 'hf/dinov2'}",
                                           f"model.llm_path={out / 'hf/qwen2'}", f"model.vae_path={out / 'hf/vae'}"]
    rows = []
    for source, data in sources.items():
        for name, objective in CONFIGS.items():
            if (only and name not in only) or ("hf" in source and name not in HF_CONFIGS):
                continue
            overrides = [*BASE, *data, *objective, f"train.samples_seen={16 * steps}",
                         f"train.checkpoint_every={steps // 2}"]
            tag = f"{source}-{name}"
            reference = run(out, f"{tag}-one", overrides, 1)
            accum = [o for o in overrides if not o.startswith("train.grad_accum")] + ["train.grad_accum=2"]
            layouts = {
                LAYOUTS[0]: lambda t=tag, a=accum: run(out, f"{t}-accum", a, 1),
                LAYOUTS[1]: lambda t=tag, o=overrides: run(out, f"{t}-ddp", [*o, "train.parallel=ddp"], 2),
                LAYOUTS[2]: lambda t=tag, o=overrides: run(out, f"{t}-fsdp", [*o, "train.parallel=fsdp"], 2),
                LAYOUTS[3]: lambda t=tag, o=overrides: (run(out, f"{t}-2to1", o, 2, until_step=steps // 2),
                                                        run(out, f"{t}-2to1", o, 1))[1],
                LAYOUTS[4]: lambda t=tag, o=overrides: (run(out, f"{t}-1to2", o, 1, until_step=steps // 2),
                                                        run(out, f"{t}-1to2", o, 2))[1],
            }
            for layout, train in layouts.items():
                if name == "grad_accum_2" and layout == LAYOUTS[0]:
                    continue
                row = {"source": source, "config": name, "layout": layout, **compare(train(), reference)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def write(out: Path, rows: list[dict], steps: int) -> None:
    """Write the rows as `rank_invariance.md` (the table) and `rank_invariance.json` in `out`."""
    lines = [f"# Rank invariance: {steps} steps of the tiny preset, batch 16 (world v1, or shards written from it)",
             "", f"Invariant: per-step losses within {LOSS_TOL:g} of the 1-rank run, final evaluation metrics within "
             f"{EVAL_TOL:g} relative (absolute below 1e-3).", "",
             "| data | config | layout | max abs diff, per-step losses (first step past 1e-5) "
             "| max rel diff, final metrics (metric) | holds |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        parts = f" (step {r['parts_at']})" if r["parts_at"] else ""
        lines.append(f"| {r['source']} | {r['config']} | {r['layout']} | {r['loss_abs']:.1e}{parts} | "
                     f"{r['eval_rel']:.1e} ({r['eval_key']}) | {'yes' if r['ok'] else 'NO'} |")
    worst = max(rows, key=lambda r: r["eval_rel"])
    lines += ["", f"Largest final-metric difference: {worst['eval_rel']:.1e} ({worst['eval_key']}, {worst['source']} "
              f"{worst['config']}, {worst['layout']}); largest per-step loss difference: "
              f"{max(r['loss_abs'] for r in rows):.1e}."]
    (out / "rank_invariance.md").write_text("\n".join(lines) + "\n")
    (out / "rank_invariance.json").write_text(json.dumps(rows, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--hf", action="store_true", help="also the tiny transformers backbones on shards")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
    out = Path(args.out)
    rows = matrix(out, args.only, args.steps, args.hf)
    write(out, rows, args.steps)
    print((out / "rank_invariance.md").read_text())


if __name__ == "__main__":
    main()
