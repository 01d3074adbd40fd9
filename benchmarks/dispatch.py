"""Per-trial dispatch overhead of each sweep backend, measured on 20 no-op trials.

A no-op trial goes through everything a real one does (task pickling, the backend's scheduling,
the trial lock, the run store's config and status writes, the attempts log) but trains nothing.
Overhead per trial = (wall time of the launch - the trials' own time) / trials. Ray's start-up and
Slurm's queue are inside the wall time except Ray's `ray.init`, reported apart.

    python -m benchmarks.dispatch [--trials 20] [--backends local,local-2,ray,slurm]
writes benchmarks/results/dispatch-<host>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from study.config import load_config
from sweeps.backends import backend
from sweeps.backends.local import LocalOptions
from sweeps.execute import TrialTask

if TYPE_CHECKING:
    from sweeps.backends.raytune import RayOptions
    from sweeps.backends.slurm import SlurmOptions

RESULTS = Path(__file__).parent / "results"


def noop_tasks(runs_dir: Path, n: int) -> list[TrialTask]:
    """`n` trial tasks whose runner does nothing: what a backend spends per trial besides training."""
    configs = [load_config("tiny", [f"train.seed={i}"]) for i in range(n)]
    return [TrialTask(str(runs_dir / c.run_id()), c.to_dict(), runner="noop") for c in configs]


def _options(name: str) -> LocalOptions | RayOptions | SlurmOptions:
    if name.startswith("local"):
        return LocalOptions(workers=int(name.partition("-")[2] or 1))
    if name == "ray":
        from sweeps.backends.raytune import RayOptions

        return RayOptions(num_cpus=os.cpu_count(), name="dispatch-benchmark")
    from sweeps.backends.slurm import SlurmOptions

    return SlurmOptions(partition=os.environ.get("SLURM_PARTITION", "debug"), mem_gb=1, time_min=5,
                        name="dispatch-benchmark", array_parallelism=64)


def measure(name: str, n: int) -> dict:
    """Launch `n` no-op trials on one backend: its wall time and overhead per trial."""
    runs_dir = Path(tempfile.mkdtemp(prefix=f"dispatch-{name}-"))
    try:
        tasks = noop_tasks(runs_dir, n)
        result: dict = {"trials": n}
        if name == "ray":
            import ray

            start = time.perf_counter()
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            result["ray_init_s"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        records = backend(name.partition("-")[0]).launch(tasks, _options(name))
        wall = time.perf_counter() - start
        own = sum(r.get("seconds", 0.0) for r in records)
        done = sum(json.loads((Path(t.run_dir) / "status.json").read_text())["state"] == "completed"
                   for t in tasks)
        result.update(wall_s=round(wall, 3), trials_own_s=round(own, 4), completed=done,
                      overhead_per_trial_s=round((wall - own) / n, 4))
        return result
    finally:
        if name == "ray":
            import ray

            ray.shutdown()
        shutil.rmtree(runs_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--backends", default="local,local-2,ray,slurm")
    args = parser.parse_args(argv)
    out = {"host": socket.gethostname(), "cpus": os.cpu_count(), "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "load_avg_at_start": os.getloadavg()[0], "backends": {}}
    for name in args.backends.split(","):
        if name == "slurm" and shutil.which("sbatch") is None:
            out["backends"][name] = {"skipped": "sbatch not on PATH"}
            continue
        out["backends"][name] = measure(name, args.trials)
        print(name, out["backends"][name], flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"dispatch-{out['host']}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
