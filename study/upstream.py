"""Runs that feed other runs: config values `run:<run_id>` name an upstream run of the same runs directory.

A pipeline's stage-1 run names its encoder as `model.encoder_checkpoint: run:<id>` (or its target projector as
`objective.target_projector: run:<id>`). The reference, not a path, is what the config and so the run id hold:
another upstream run is another downstream run, and moving the runs directory changes no id. Where a run (or a
tool reading one) starts, `resolve` turns each reference into the file that completed run left, once: its status
read once and the file hashed once, the digest kept for everything after (the pin, the checkpoints' record of the
frozen modules).

Weights, not ids, are what a downstream run trains on, and a retrain under the same id (another machine, other
float rounding) gives other weights. So an upstream run exports its final weights (`weights.pt`, committed with
its records, their sha256 in its status) and a downstream run pins the digest of every file it loads
(`upstream.json`): a resume, or any later start, against different weights is refused. Committed records carry
no checkpoints: an upstream run committed without its weights cannot feed a new dependent, which says so and
how to retrain it (in a new runs directory, never over the committed record).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from study.config import RunConfig
from study.errors import UserError
from study.files import atomic_write
from study.runstore import RunStore, sha256

RUN_PREFIX = "run:"
REFERENCE_KEYS = (("model", "encoder_checkpoint"), ("objective", "target_projector"))
WEIGHTS = "weights.pt"
PINS = "upstream.json"


def run_reference(run_id: str) -> str:
    """How a config refers to another run of the same runs directory."""
    return f"{RUN_PREFIX}{run_id}"


def upstream_ids(cfg: RunConfig) -> list[str]:
    """The run ids this config names, in REFERENCE_KEYS order, without repeats."""
    ids = []
    for section, key in REFERENCE_KEYS:
        value = getattr(getattr(cfg, section), key)
        if value.startswith(RUN_PREFIX) and value[len(RUN_PREFIX):] not in ids:
            ids.append(value[len(RUN_PREFIX):])
    return ids


@dataclass(frozen=True)
class Upstream:
    """A run's upstream references, resolved: `cfg` with files in their place, and per config key the run, file and
    sha256 of what it loads."""

    cfg: RunConfig
    files: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def digests(self) -> dict[str, str]:
        return {key: f["sha256"] for key, f in self.files.items()}


def retrain_hint(run_dir: Path) -> str:
    """What to do when an upstream run cannot be used: retrain the pipeline in a new runs directory."""
    return (f"retrain it with the pipeline that made it in a new runs directory (`unihetero sweep launch GRID "
            f"--preset PRESET --runs-dir NEW_DIR`: the same run ids, and {run_dir.parent} stays as it is)")


def final_weights(run_dir: Path, key: str) -> tuple[Path, str]:
    """The file a completed upstream run's dependents load (its exported weights, else its last checkpoint) and
    that file's sha256, or a UserError naming the key, the run and what to do."""
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
        if not path.is_file():
            raise UserError(f"config key '{key}': upstream run '{run_dir.name}' has no {path.name} here (committed "
                            f"records may lack it): {retrain_hint(run_dir)}")
        digest = sha256(path)
        if digest != status["weights_sha256"]:
            raise UserError(f"config key '{key}': {path} is not the file upstream run '{run_dir.name}' exported "
                            f"(sha256 {status['weights_sha256'][:12]}...)")
        return path, digest
    checkpoints = RunStore(run_dir).checkpoints()
    if not checkpoints or checkpoints[-1].is_dir():
        raise UserError(f"config key '{key}': upstream run '{run_dir.name}' is completed but holds neither exported "
                        f"weights nor a checkpoint (committed records carry none): {retrain_hint(run_dir)}")
    return checkpoints[-1], sha256(checkpoints[-1])


def has_weights(run_dir: Path) -> bool:
    """Whether a completed upstream run holds what its dependents load (without hashing it)."""
    status = RunStore(run_dir).status()
    if "weights_sha256" in status:
        return (run_dir / status["weights"]).is_file()
    checkpoints = RunStore(run_dir).checkpoints()
    return bool(checkpoints) and not checkpoints[-1].is_dir()


def resolve(cfg: RunConfig, runs_dir: Path) -> Upstream:
    """`cfg`'s run references resolved against `runs_dir` (cfg itself, and its id, keep the references)."""
    if not upstream_ids(cfg):
        return Upstream(cfg)
    out, files, seen = copy.deepcopy(cfg), {}, {}
    for section, key in REFERENCE_KEYS:
        value = getattr(getattr(out, section), key)
        if value.startswith(RUN_PREFIX):
            run = value[len(RUN_PREFIX):]
            if run not in seen:  # one upstream run named by two keys is read and hashed once
                seen[run] = final_weights(runs_dir / run, f"{section}.{key}")
            path, digest = seen[run]
            setattr(getattr(out, section), key, str(path))
            files[f"{section}.{key}"] = {"run": run, "file": path.name, "sha256": digest}
    return Upstream(out, files)


def pin(upstream: Upstream, run_dir: Path) -> None:
    """Record the digest of every upstream file this run loads (first start), or refuse different ones."""
    if not upstream.files:
        return
    pins = run_dir / PINS
    if not pins.exists():
        atomic_write(pins, json.dumps(upstream.files, indent=1).encode())
        return
    try:
        pinned = json.loads(pins.read_text())
    except ValueError:
        raise UserError(f"{pins}: not valid JSON (it records the upstream weights this run trained on)") from None
    for key, now in upstream.files.items():
        then = pinned.get(key, {})
        if then.get("sha256") != now["sha256"]:
            raise UserError(f"config key '{key}': upstream run '{now['run']}' now gives weights "
                            f"{now['file']} sha256 {now['sha256'][:12]}..., not the "
                            f"{then.get('sha256', 'unrecorded')[:12]}... this run trained on ({pins}): "
                            f"it was retrained; train against it in a new runs directory")
