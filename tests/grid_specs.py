"""Grid spec files on the tiny preset, the `sweep launch` command lines that run them, and what their runs leave in
the runs directory (helpers of the sweep, backend and reliability tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from study.runstore import RunStore
from sweeps.execute import ATTEMPTS
from sweeps.spec import expand, load_spec

REPO = Path(__file__).resolve().parents[1]
FAST = {"train.samples_seen": 64, "eval.num_images": 4, "eval.probe_images": 20, "eval.inference_scaling": False}


def write_grid_spec(tmp_path: Path, body: str = "", name: str = "g", **overrides) -> Path:
    """A grid spec on the tiny preset: three seeds unless `body` says otherwise."""
    values = FAST | overrides
    lines = "\n".join(f"    {k}: {v}" for k, v in values.items())
    text = f"name: {name}\nbase:\n  preset: tiny\n  overrides:\n{lines}\n" + textwrap.dedent(body)
    if "seeds:" not in text and "presets:" not in body:
        text += "seeds: [0, 1, 2]\n"
    if "presets:" not in text:
        text += "presets:\n  smoke: {}\n"
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def write_pipeline(tmp_path: Path, stage_overrides: str = "{}") -> Path:
    """A stage grid of one contrastive encoder run and a dependent grid of two frozen-encoder arms."""
    (tmp_path / "enc.yaml").write_text(textwrap.dedent(f"""\
        name: enc
        base: {{preset: tiny, overrides: {{objective.task: contrastive, train.samples_seen: 64, eval.num_images: 8,
                                          eval.probe_images: 40}}}}
        zip: [{{arm: [contrastive], objective.task: [contrastive]}}]
        seeds: [0]
        presets: {{smoke: {{base: {{overrides: {stage_overrides}}}}}}}
        """))
    path = tmp_path / "vlm.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: vlm
        stages: {{enc: enc.yaml}}
        base:
          preset: tiny
          overrides: {{model.encoder_checkpoint: {{stage: enc, arm: contrastive}}, model.freeze_encoder: true}}
        zip: [{{arm: [text_only, semantic_input], objective.target: [none, semantic_input]}}]
        seeds: [0]
        presets: {{smoke: {{base: {{overrides: {json.dumps(FAST)}}}}}}}
        """))
    return path


def launch_argv(grid: Path, runs: Path, *extra: str) -> list[str]:
    return ["sweep", "launch", str(grid), "--preset", "smoke", "--runs-dir", str(runs), *extra]


def run_dirs(grid: Path, runs: Path) -> list[Path]:
    return [runs / t.run_id for t in expand(load_spec(str(grid), "smoke"))]


def attempts(run: Path) -> list[dict]:
    return RunStore(run).records(ATTEMPTS)


def cli_process(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "unihetero", *argv], cwd=REPO, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def ray_cli_launch(grid: Path, runs: Path, address: str, env: dict[str, str],
                   *extra: str) -> subprocess.CompletedProcess:
    """`sweep launch GRID --backend ray --ray-address ADDRESS` in a child process whose RAY_AUTH_* variables are
    `env`'s only."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    argv = launch_argv(grid, runs, "--backend", "ray", "--ray-address", address, *extra)
    return subprocess.run([sys.executable, "-m", "unihetero", *argv], cwd=REPO, env=clean | env, capture_output=True,
                          text=True, timeout=300)


def tune_reports(runs: Path) -> list[dict]:
    """What the one Tune trial of a Ray launch reported, from Tune's own result file in its experiment folder."""
    (result,) = (runs / ".ray").glob("*/*/result.json")
    return [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
