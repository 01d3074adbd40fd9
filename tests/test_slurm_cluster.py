"""The local Slurm cluster (scripts/slurm_cluster.sh) runs submitit jobs in this venv."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

try:
    from slurm_helpers import require_slurm, wait_result
except ImportError:  # tests/ imported as a package
    from tests.slurm_helpers import require_slurm, wait_result

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slurm
def test_submitit_job_runs_on_local_slurm(tmp_path):
    partition = require_slurm()
    import submitit

    # Defined inside the test so cloudpickle ships it by value (the job cannot import test modules).
    def probe(a: int, b: int) -> tuple[int, str, str]:
        import sys

        import unihetero

        return a * b, sys.executable, unihetero.__file__

    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(
        # submitit asks Slurm for USR2 90 s before the limit; a 2-minute limit sent it during the job's
        # cold start, before submitit's handler was installed, and killed the probe (CI, 2026-12-05).
        timeout_min=10,
        slurm_partition=partition,
        cpus_per_task=1,
        mem_gb=1,
        name="unihetero-slurm-smoke",
        # Job cwd = repo root, so `unihetero` imports even if the venv has no editable install.
        slurm_additional_parameters={"chdir": str(REPO_ROOT)},
    )
    job = executor.submit(probe, 21, 2)
    value, executable, module_file = wait_result(job, timeout_s=120)

    assert value == 42
    assert executable == sys.executable  # same venv interpreter as the test process
    assert Path(module_file).resolve().is_relative_to(REPO_ROOT)
