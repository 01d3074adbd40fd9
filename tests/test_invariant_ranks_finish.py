"""Invariant: every accepted config finishes on several ranks. The tiny model with each shipped preset's evaluation
options (periodic and final evaluations, inference scaling, rollout, probes, benchmarks) and each objective
trains to completion under a 2-rank torchrun (gloo). With `train.dist_timeout_min=1` a collective that only some
ranks enter fails within a minute instead of hanging for half an hour.

The full-scale presets run with the tiny transformers backbones on shards, as they would with real ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from study.config import PRESET_DIR, presets, read_yaml
from study.data.worlds import build_world
from study.evaluation.bench import world_tasks
from study.runstore import RunStore
from tests.conftest import tiny_config
from unihetero.cli import main

ROOT = Path(__file__).parents[1]
OBJECTIVES = ("none", "semantic_input", "semantic_encoder", "pixel")
RUN = ["train.samples_seen=64", "train.warmup_steps=2", "train.checkpoint_every=2", "train.log_every=2",
       "train.threads=1", "train.dist_timeout_min=1", "eval.bench_limit=6"]
SIZED = {"every": 2, "num_images": 8, "probe_images": 24}  # sizes and frequency for a 4-step run; options as shipped


def eval_options(preset: str) -> list[str]:
    """The preset's own evaluation options (and its world), its sizes scaled to a tiny run."""
    shipped = read_yaml(PRESET_DIR / f"{preset}.yaml")
    world = shipped.get("data", {}).get("world_version", 1)
    return [f"data.world_version={world}",
            *(f"eval.{key}={json.dumps(value)}" for key, value in {**shipped.get("eval", {}), **SIZED}.items())]


def benchmarks(root: Path) -> list[str]:
    world = build_world(tiny_config().data)
    root.mkdir(parents=True)
    files = [world_tasks.write_tsv(root / "mc.tsv", world_tasks.colour_questions(world, 8)),
             world_tasks.write_count_folder(root / "count", world, 8),
             world_tasks.write_captions(root / "coco" / "captions.json", world, 4)]
    return [f"eval.benchmarks={json.dumps([str(f) for f in files])}"]


def jobs(tmp_path: Path, tiny_hf: dict[str, str]) -> list[dict]:
    shards = tmp_path / "shards"
    assert main(["data", "shards", str(shards), "--world", "96", "--config", "tiny", "--shard-size", "16"]) == 0
    hf = ["model.backbone=hf", f"model.vision_path={tiny_hf['dinov2']}", f"model.llm_path={tiny_hf['qwen2']}",
          f"model.vae_path={tiny_hf['vae']}", "data.source=shards", f"data.shards={shards}",
          "data.unique_samples=64", "data.shuffle_buffer=16"]
    bench = benchmarks(tmp_path / "bench")
    out = []
    for preset in presets():
        full_scale = read_yaml(PRESET_DIR / f"{preset}.yaml").get("model", {}).get("backbone") == "hf"
        for target in OBJECTIVES:
            overrides = [*RUN, *eval_options(preset), f"objective.target={target}", *(hf if full_scale else bench)]
            run_dir = tmp_path / "runs" / f"{preset}-{target}"
            out.append({"config": "tiny", "overrides": overrides, "run_dir": str(run_dir)})
    return out


@pytest.mark.slow
def test_every_preset_and_objective_finishes_on_two_ranks(tmp_path, tiny_hf):
    todo = jobs(tmp_path, tiny_hf)
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps(todo))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tests.rank_jobs", str(jobs_file)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    finished = (tmp_path / "jobs.json.done").read_text().split() if (tmp_path / "jobs.json.done").exists() else []
    assert done.returncode == 0, f"finished {len(finished)} of {len(todo)}; then: {done.stderr[-3000:]}"
    assert finished == [job["run_dir"] for job in todo]
    for job in todo:
        store = RunStore(job["run_dir"])
        status, evals = store.status(), store.records("eval.jsonl")
        assert status["state"] == "completed" and status["world_size"] == 2, job["run_dir"]
        assert [e["step"] for e in evals] == [0, 2, 4] and evals[-1]["final"], job["run_dir"]
        if "data.source=shards" not in job["overrides"]:  # world runs: benchmarks and inference scaling too
            assert any(k.startswith("bench/mc/") for k in evals[-1]), job["run_dir"]
            assert (Path(job["run_dir"]) / "inference_scaling.json").is_file(), job["run_dir"]
