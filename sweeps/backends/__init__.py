"""Backends that execute a list of trial tasks: `local`, `ray` (Ray Tune), `slurm` (Submitit arrays).

Each backend module has `launch(tasks, options) -> list[dict]` (the execution records, informational:
the run store is the truth) and an options dataclass; a backend that joins a cluster also has
`session(options)`, a context manager that joins it (failing with one line when it cannot) for the
whole launch, and `check_shared(runs_dir, options)`, which fails with one line when a node of the cluster
cannot see the runs directory. Modules import their engine lazily.
"""

from __future__ import annotations

import contextlib
import importlib
from types import ModuleType

BACKENDS = {"local": "sweeps.backends.local", "ray": "sweeps.backends.raytune",
            "slurm": "sweeps.backends.slurm"}


def backend(name: str) -> ModuleType:
    """The backend module of that name (imported only when used)."""
    return importlib.import_module(BACKENDS[name])


def backend_session(engine: ModuleType, options: object) -> contextlib.AbstractContextManager:
    """The backend's cluster session for a launch, or nothing to join."""
    session = getattr(engine, "session", None)
    return session(options) if session else contextlib.nullcontext()
