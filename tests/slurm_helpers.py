"""Helpers for tests that need the local single-node Slurm cluster (scripts/slurm_cluster.sh up).

Outside CI a missing/unresponsive cluster skips the test; with ``CI`` set it fails, because CI
(.ci/run) starts the cluster and Slurm coverage is required there.

Notes on submitit with this cluster (submitit 1.5.x):

* Same interpreter: ``SlurmExecutor(python=None)`` uses ``shlex.quote(sys.executable)``, so the job
  runs ``<this venv's python> -u -m submitit.core._submit <folder>`` (via ``srun`` inside the sbatch
  script) and sees the venv's site-packages.  sbatch exports the submitting environment
  (``--export=ALL``) and starts in the submitting cwd, and ``python -m`` puts the cwd on sys.path,
  so the project's packages import in the job if they are installed in the venv *or* the job's
  cwd is the repo root (pass ``slurm_additional_parameters={"chdir": ...}`` to pin it).
* Functions are cloudpickled: module-level functions of a test module are pickled *by reference*
  and the job cannot import ``test_xxx`` modules, so submit project functions, builtins or
  functions defined inside the test (pickled by value).
* There is no slurmdbd, so ``sacct`` fails ("accounting storage is disabled"): submitit's
  ``job.state`` stays UNKNOWN and ``job.result()`` blocks until the result pickle appears -- forever
  if the job dies.  Use :func:`wait_result` (bounded; reads the state with ``squeue``, which keeps
  finished jobs for MinJobAge=600 s) instead of a bare ``job.result()``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from typing import Any

import pytest

PARTITION = "debug"
_READY_STATES = {"idle", "mixed", "allocated", "completing"}


# `sweep launch` options for a grid on the local cluster
SLURM_ARGS = ("--backend", "slurm", "--partition", "debug", "--mem-gb", "2", "--time-min", "5")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _run(*cmd: str, timeout: float = 15) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=timeout).stdout


@functools.cache  # probing a dead controller takes ~10 s; do it once per session
def _cluster_problem() -> str | None:
    """None if the cluster accepts jobs, else a human-readable reason."""
    if shutil.which("sinfo") is None:
        return "sinfo is not on PATH (Slurm is not installed; run `sudo scripts/slurm_cluster.sh up`)"
    try:
        states = _run("sinfo", "-h", "-p", PARTITION, "-o", "%a %T").split()
    except (subprocess.SubprocessError, OSError) as e:
        detail = getattr(e, "stderr", None) or e
        return f"Slurm is not responding ({str(detail).strip()}); run `sudo scripts/slurm_cluster.sh up`"
    if not states:
        return f"Slurm has no partition {PARTITION!r}; run `sudo scripts/slurm_cluster.sh up`"
    if states[0] != "up" or not _READY_STATES & set(states[1::2]):
        return f"Slurm partition {PARTITION!r} is not usable (sinfo: {' '.join(states)})"
    return None


def require_slurm() -> str:
    """Skip (or, under CI, fail) unless the local Slurm cluster accepts jobs; return the partition."""
    problem = _cluster_problem()
    if problem is not None:
        if _in_ci():
            pytest.fail(f"CI requires Slurm: {problem}", pytrace=False)
        pytest.skip(problem)
    return PARTITION


def job_state(job_id: str) -> str:
    """Slurm state of a job (PENDING, RUNNING, COMPLETED, FAILED, ...) or UNKNOWN if it is gone."""
    try:
        out = _run("squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T").split()
    except (subprocess.SubprocessError, OSError):
        return "UNKNOWN"
    return out[0] if out else "UNKNOWN"


_FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}


def wait_result(job: Any, timeout_s: float = 120, grace_s: float = 10) -> Any:
    """``job.result()`` with a deadline, failing with Slurm state and job logs instead of hanging."""
    deadline = time.monotonic() + timeout_s
    final_since = None
    while not job.paths.result_pickle.exists():
        state = job_state(job.job_id)
        if state in _FINAL:
            final_since = final_since or time.monotonic()
            if time.monotonic() - final_since > grace_s:  # finished but no result file
                break
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    if not job.paths.result_pickle.exists():
        logs = "\n".join(
            f"--- {p}:\n{p.read_text()[-2000:]}" for p in (job.paths.stdout, job.paths.stderr) if p.exists()
        )
        pytest.fail(f"Slurm job {job.job_id} produced no result (state {job_state(job.job_id)})\n{logs}")
    return job.result()
