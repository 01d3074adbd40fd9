"""Runs that feed other runs: config values `run:<run_id>` name an upstream run of the same runs directory.

A pipeline's stage-1 run names its encoder as `model.encoder_checkpoint: run:<id>` (or its target projector as
`objective.target_projector: run:<id>`). The reference, not a path, is what the config and so the run id hold:
another upstream run is another downstream run, and moving the runs directory changes no id. When the run
starts, each reference resolves to the final checkpoint of that completed run, beside it in the runs directory.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from study.config import RunConfig
from study.errors import UserError

RUN_PREFIX = "run:"
REFERENCE_KEYS = (("model", "encoder_checkpoint"), ("objective", "target_projector"))


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


def final_checkpoint(run_dir: Path, key: str) -> Path:
    """The last checkpoint of the completed run in `run_dir`, or a UserError naming the key and the run."""
    try:
        state = json.loads((run_dir / "status.json").read_text()).get("state")
    except (OSError, ValueError):
        state = None
    if state != "completed":
        raise UserError(f"config key '{key}': upstream run '{run_dir.name}' in {run_dir.parent} is "
                        f"{state or 'missing'}, not completed")
    checkpoints = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    if not checkpoints:
        raise UserError(f"config key '{key}': upstream run '{run_dir.name}' has no checkpoint left "
                        f"(retrain it: its checkpoints are not part of committed records)")
    return checkpoints[-1]


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
