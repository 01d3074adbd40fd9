"""Backends that execute a list of trial tasks: `local`, `ray` (Ray Tune), `slurm` (Submitit arrays).

Each backend module has `launch(tasks, options) -> list[dict]` (the execution records, informational:
the run store is the truth) and an options dataclass. Modules import their engine lazily.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS = {"local": "sweeps.backends.local", "ray": "sweeps.backends.raytune",
            "slurm": "sweeps.backends.slurm"}


def backend(name: str) -> ModuleType:
    return importlib.import_module(BACKENDS[name])
