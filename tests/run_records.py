"""Synthetic run directories and grid membership files, as the run store and sweeps write them (helpers of the
analysis and report tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from study.config import load_config

CHANCE = {"chance": 0.24, "chance/size": 0.5, "chance/colour": 1 / 6, "chance/shape": 0.2, "chance/location": 1 / 9}


def _eval_record(step: int, samples: int, acc: float, final: bool, extra: dict) -> dict:
    return {"step": step, "samples_seen": samples, "final": final, "caption_loss": 3.0 - 2.0 * acc, "zs_acc": acc,
            **{f"zs_acc/{a}": acc for a in ("size", "colour", "shape", "location")}, **CHANCE, **extra}


def write_run(runs_dir: Path, overrides: list[str], curve: list[float], *, state: str = "completed",
              extra: dict | None = None, inference: dict | None = None) -> Path:
    """A synthetic run of the tiny preset: zs_acc follows `curve` at evaluations spaced evenly over
    training (curve[0] is the step-0 floor, curve[-1] the final evaluation)."""
    cfg = load_config("tiny", overrides)
    path = runs_dir / cfg.run_id()
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    steps, batch = cfg.steps, cfg.train.batch_size
    at = np.linspace(0, steps, len(curve)).round().astype(int)
    done = state == "completed"
    evals = [_eval_record(int(s), int(s) * batch, a, done and i == len(curve) - 1, extra or {})
             for i, (s, a) in enumerate(zip(at, curve, strict=True))]
    (path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    metrics = [{"step": int(s), "samples_seen": int(s) * batch, "loss/caption": 3.0 - a, "loss/total": 3.5 - a}
               for s, a in zip(at[1:], curve[1:], strict=True)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    status = {"state": state, "step": int(at[-1]), "total_steps": steps}
    if state == "failed":
        status["reason"] = f"non-finite loss at step {at[-1]}"
    (path / "status.json").write_text(json.dumps(status))
    if inference is not None:
        (path / "inference_scaling.json").write_text(json.dumps(inference))
    return path


def write_membership(runs_dir: Path, name: str, trials: list[tuple[dict, Path]], preset: str = "smoke") -> Path:
    """A grid membership file as sweeps writes it: (axes, run directory) per trial."""
    body = {"grid": name, "preset": preset, "description": f"synthetic {name}",
            "trials": [{"index": i, "run_id": p.name, "axes": axes} for i, (axes, p) in enumerate(trials)]}
    path = runs_dir / "grids" / f"{name}__{preset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))
    return path


def zs_norm_of(acc: float) -> float:
    """`zs_norm` of a synthetic run's zs_acc (0 at its overall chance, 0.24; 1 perfect)."""
    return (acc - CHANCE["chance"]) / (1 - CHANCE["chance"])


def _rewrite(path: Path, update) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(update(r)) + "\n" for r in records))


def add_v2_metrics(path: Path, collapsed: bool, flops_per_sample: float = 1e9) -> None:
    """zs_norm beside zs_acc in every evaluation, the collapse diagnostics, and training FLOPs."""
    _rewrite(path / "eval.jsonl", lambda r: r | {"zs_norm": zs_norm_of(r["zs_acc"]), "diag/global_share": 0.02,
                                                 "diag/image_share": 0.95 if collapsed else 0.1})
    _rewrite(path / "metrics.jsonl", lambda r: r | {"flops": flops_per_sample * r["samples_seen"]})


def demo_runs(runs: Path, text_only_final: float) -> None:
    """The demo grid's records: text only ending at `text_only_final` zs_acc, semantic_input 0.05 above it."""
    trials = []
    for arm, target, delta in (("text_only", "none", 0.0), ("semantic_input", "semantic_input", 0.05)):
        for seed in (0, 1, 2):
            final = text_only_final + delta + 0.01 * seed
            p = write_run(runs, [f"objective.target={target}", f"train.seed={seed}"], [0.24, final - 0.1, final])
            add_v2_metrics(p, collapsed=False)
            trials.append(({"arm": arm, "objective.target": target, "seed": seed}, p))
    write_membership(runs, "v2_demo", trials, preset="demo")
