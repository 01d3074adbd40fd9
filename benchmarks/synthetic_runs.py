"""A synthetic runs directory for the analysis benchmark: completed runs of a generation-target grid, each
with its config, status, and an eval record per evaluation step (5 metrics) in the run store's formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from study.config import load_config

ARMS = {"text_only": "none", "semantic_input": "semantic_input", "semantic_encoder": "semantic_encoder",
        "pixel": "pixel", "semantic_input+pixel": "semantic_input+pixel"}
METRICS = ("zs_acc", "caption_loss", "probe_acc", "sem/cos", "pix/psnr")
GRID = "generation_target"


def _eval_lines(rng: np.random.Generator, effect: float, evals: int, every: int, batch: int) -> bytes:
    progress = 1 - np.exp(-np.arange(evals) / (evals / 4))
    noise = rng.normal(0, 0.02, (evals, len(METRICS)))
    base = np.stack([0.25 + 0.4 * progress + effect, 3.0 - 1.5 * progress - effect, 0.3 + 0.3 * progress,
                     0.2 + 0.6 * progress, 10 + 8 * progress], axis=1) + noise
    lines = []
    for i in range(evals):
        record = {"step": i * every, "samples_seen": i * every * batch, "final": i == evals - 1}
        record |= {m: round(float(v), 6) for m, v in zip(METRICS, base[i], strict=True)}
        lines.append(json.dumps(record))
    return ("\n".join(lines) + "\n").encode()


def write_runs(root: Path, runs: int, evals: int = 200, seed: int = 0) -> Path:
    """`runs` completed runs (arms x seeds) under root/runs with a grid membership file; returns root/runs."""
    out = root / "runs"
    (out / "grids").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    trials = []
    for index in range(runs):
        arm = list(ARMS)[index % len(ARMS)]
        cfg = load_config("cpu-small", [f"objective.target={ARMS[arm]}", f"train.seed={index // len(ARMS)}",
                                        "objective.diffusion_width=256"])
        run_id = cfg.run_id()
        path = out / run_id
        path.mkdir(exist_ok=True)
        (path / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        every = max(1, cfg.steps // (evals - 1))
        effect = 0.01 * (index % len(ARMS))
        lines = _eval_lines(rng, effect, evals, every, cfg.train.batch_size)
        (path / "eval.jsonl").write_bytes(lines)
        final = json.loads(lines.splitlines()[-1])
        status = {"state": "completed", "step": cfg.steps, "total_steps": cfg.steps,
                  "final": {k: v for k, v in final.items() if k in METRICS}}
        (path / "status.json").write_text(json.dumps(status))
        trials.append({"index": index, "run_id": run_id, "axes": {"arm": arm, "seed": index // len(ARMS)}})
    membership = {"grid": GRID, "preset": "cpu", "spec": "synthetic", "description": "synthetic runs",
                  "trials": trials}
    (out / "grids" / f"{GRID}__cpu.json").write_text(json.dumps(membership))
    return out
