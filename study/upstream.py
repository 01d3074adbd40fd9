"""Runs that feed other runs: config values `run:<run_id>` name an upstream run of the same runs directory.

A pipeline's stage-1 run names its encoder as `model.encoder_checkpoint: run:<id>` (or its target projector as
`objective.target_projector: run:<id>`). The reference, not a path, is what the config and so the run id hold:
another upstream run is another downstream run, and moving the runs directory changes no id. When the run
starts, each reference resolves to the final checkpoint of that completed run, beside it in the runs directory.

Weights, not ids, are what a downstream run trains on, and a retrain under the same id (another machine, other
float rounding) gives other weights. So an upstream run exports its final weights (`weights.pt`, committed with
its records, their sha256 in its status) and a downstream run pins the digest of every file it loads
(`upstream.json`): a resume, or any later start, against different weights is refused.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch

from study.config import RunConfig
from study.errors import UserError
from study.runstore import RunStore, atomic_write

RUN_PREFIX = "run:"
REFERENCE_KEYS = (("model", "encoder_checkpoint"), ("objective", "target_projector"))
WEIGHTS = "weights.pt"
PINS = "upstream.json"


def run_reference(run_id: str) -> str:
    return f"{RUN_PREFIX}{run_id}"


def upstream_ids(cfg: RunConfig) -> list[str]:
    """The run ids this config names, in REFERENCE_KEYS order, without repeats."""
    ids = []
    for section, key in REFERENCE_KEYS:
        value = getattr(getattr(cfg, section), key)
        if value.startswith(RUN_PREFIX) and value[len(RUN_PREFIX):] not in ids:
            ids.append(value[len(RUN_PREFIX):])
    return ids


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_weights(store: RunStore, model_state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Write a completed upstream run's final weights beside its records; the status fields that name them."""
    path = store.path / WEIGHTS
    atomic_write(path, lambda f: torch.save(model_state, f))
    return {"weights": WEIGHTS, "weights_sha256": sha256(path)}


def final_checkpoint(run_dir: Path, key: str) -> Path:
    """The exported weights (else the last checkpoint) of the completed run in `run_dir`, or a UserError naming
    the key and the run."""
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        status = {}
    state = status.get("state")
    if state != "completed":
        raise UserError(f"config key '{key}': upstream run '{run_dir.name}' in {run_dir.parent} is "
                        f"{state or 'missing'}, not completed")
    if "weights_sha256" in status:
        path = run_dir / status["weights"]
        if not path.is_file() or sha256(path) != status["weights_sha256"]:
            raise UserError(f"config key '{key}': {path} is missing or is not the file upstream run "
                            f"'{run_dir.name}' exported (sha256 {status['weights_sha256'][:12]}...)")
        return path
    checkpoints = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    if not checkpoints:
        raise UserError(f"config key '{key}': upstream run '{run_dir.name}' has no checkpoint left "
                        f"(retrain it: its checkpoints are not part of committed records)")
    return checkpoints[-1]


def pin(cfg: RunConfig, run_dir: Path) -> None:
    """Record the digest of every upstream file this run loads (first start), or refuse different ones."""
    loaded = resolve(cfg, run_dir.parent)
    current = {}
    for section, key in REFERENCE_KEYS:
        reference = getattr(getattr(cfg, section), key)
        if reference.startswith(RUN_PREFIX):
            path = Path(getattr(getattr(loaded, section), key))
            current[f"{section}.{key}"] = {"run": reference[len(RUN_PREFIX):], "file": path.name,
                                           "sha256": sha256(path)}
    if not current:
        return
    pins = run_dir / PINS
    if not pins.exists():
        atomic_write(pins, json.dumps(current, indent=1).encode())
        return
    try:
        pinned = json.loads(pins.read_text())
    except ValueError:
        raise UserError(f"{pins}: not valid JSON (it records the upstream weights this run trained on)") from None
    for key, now in current.items():
        then = pinned.get(key, {})
        if then.get("sha256") != now["sha256"]:
            raise UserError(f"config key '{key}': upstream run '{now['run']}' now gives weights "
                            f"{now['file']} sha256 {now['sha256'][:12]}..., not the "
                            f"{then.get('sha256', 'unrecorded')[:12]}... this run trained on ({pins}): "
                            f"it was retrained; train against it in a new runs directory")


def resolve(cfg: RunConfig, runs_dir: Path) -> RunConfig:
    """A copy of `cfg` whose run references are checkpoint paths (cfg itself, and its id, keep the references)."""
    if not upstream_ids(cfg):
        return cfg
    out = copy.deepcopy(cfg)
    for section, key in REFERENCE_KEYS:
        value = getattr(getattr(out, section), key)
        if value.startswith(RUN_PREFIX):
            path = final_checkpoint(runs_dir / value[len(RUN_PREFIX):], f"{section}.{key}")
            setattr(getattr(out, section), key, str(path))
    return out
