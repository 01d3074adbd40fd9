"""Grid membership (`RUNS_DIR/grids/<grid>__<preset>.json`, written by sweeps): which runs make up each grid,
and a readable arm label per trial from the axis values that vary.

An arm is a trial's axes minus the seed and the data scale (`data.unique_samples`, `train.samples_seen`).
Its label joins the values of the label axes (keys without a dot, such as `arm` or `regime`) and any
config axis they do not already determine, e.g. "semantic · semantic_weight=0.3".
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from analysis.runs import SAMPLES, SEED, D, format_value, short_names

NOT_ARM = ("seed", SEED, D, SAMPLES)


@dataclass(frozen=True)
class Grid:
    """A grid as the analysis reads it: its name, preset and member runs with their trial and arm."""

    name: str
    preset: str
    description: str
    members: pl.DataFrame  # run_id, trial, arm
    part: str = ""  # which of the grid's studies a copy of it is for ('' = the first)

    @property
    def key(self) -> str:
        return f"{self.name}__{self.preset}" + (f"__{self.part}" if self.part else "")


def _determined(key: str, by: list[str], axes: list[dict]) -> bool:
    """Whether the value of `key` is a function of the values of the keys `by` over these trials."""
    if not by:
        return False
    seen: dict[str, str] = {}
    for a in axes:
        group, value = json.dumps([a.get(k) for k in by]), json.dumps(a.get(key))
        if seen.setdefault(group, value) != value:
            return False
    return True


ARM_SEPARATOR = " · "  # between the label axes of an arm's name ("semantic_input · fixed")


def arm_labels(axes: list[dict], fallback: str) -> list[str]:
    """One label per trial (see the module docstring); `fallback` when no axis varies."""
    arm_axes = [{k: v for k, v in a.items() if k not in NOT_ARM} for a in axes]
    keys = list(dict.fromkeys(k for a in arm_axes for k in a))
    varying = [k for k in keys if len({json.dumps(a.get(k)) for a in arm_axes}) > 1]
    label_keys = [k for k in varying if "." not in k]
    config_keys = [k for k in varying if "." in k and not _determined(k, label_keys, arm_axes)]
    names = short_names(config_keys)
    return [ARM_SEPARATOR.join([format_value(a.get(k)) for k in label_keys]
                       + [f"{names[k]}={format_value(a.get(k))}" for k in config_keys]) or fallback
            for a in arm_axes]


def _read(path: Path) -> Grid:
    body = json.loads(path.read_text())
    trials = body["trials"]
    axes = [dict(t["axes"]) for t in trials]
    labels = arm_labels(axes, fallback=str(body["grid"]))
    members = pl.DataFrame({"run_id": [str(t["run_id"]) for t in trials],
                            "trial": [int(t["index"]) for t in trials], "arm": labels},
                           schema={"run_id": pl.String, "trial": pl.Int64, "arm": pl.String})
    return Grid(str(body["grid"]), str(body["preset"]), str(body.get("description", "")), members)


def read_grids(runs_dir: Path | str) -> list[Grid]:
    """Every readable membership file, sorted by name; an unreadable one is skipped with a warning."""
    grids = []
    for path in sorted((Path(runs_dir) / "grids").glob("*.json")):
        try:
            grids.append(_read(path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            warnings.warn(f"{path}: unreadable grid membership ({e.__class__.__name__}), skipped", stacklevel=2)
    return grids
