"""Preemption with a real signal: SIGUSR1 or SIGTERM mid-step makes the run checkpoint that step and leave (the
default handler then ends the process); the resumed run ends exactly as one that never stopped."""

import signal

import pytest

from study.runstore import RunStore
from tests.reliability.conftest import assert_same_run
from tests.reliability.test_kill_resume import _drive


@pytest.mark.slow
@pytest.mark.parametrize("name", ["USR1", "TERM"])
def test_a_signal_checkpoints_the_next_step_boundary_and_the_resume_equals_uninterrupted(tmp_path, name):
    reference, victim = tmp_path / "reference", tmp_path / "victim"
    assert _drive(reference, "none") == 0
    signum = signal.Signals[f"SIG{name}"]
    assert _drive(victim, f"step:12:{name}") == -signum  # the signal, passed on to its default handler
    store = RunStore(victim)
    status = store.status()
    assert status["state"] == "running" and status["preempted"] == f"SIG{name}"
    # the signal came during step 13; its checkpoint is of step 13, between the periodic ones of 10 and 15
    assert status["step"] == 13 and store.checkpoints()[-1].name == "step_00000013.pt"
    assert _drive(victim, "none") == 0
    assert_same_run(reference, victim)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_plain_slurm_job_warned_by_usr1_checkpoints_requeues_itself_and_resumes(tmp_path):
    """`--signal=USR1@T` as Slurm delivers it (`scancel --signal=USR1 --batch`, the time-limit warning sent
    now): the job writes the preemption checkpoint, requeues itself, and its second start resumes from it."""
    import subprocess
    import sys
    import time

    from tests.reliability.test_kill_resume import OVERRIDES, ROOT
    from tests.slurm_helpers import require_slurm

    partition = require_slurm()
    # 600 steps, evaluated before and after only: long enough to be signalled mid-run
    overrides = [o for o in OVERRIDES if not o.startswith(("train.samples_seen", "eval.every"))]
    overrides.append("train.samples_seen=9600")
    reference = tmp_path / "reference"
    run = tmp_path / "victim"
    script = tmp_path / "job.sh"
    command = " ".join([sys.executable, "-m", "tests.reliability.kill_driver", str(run), "none", *overrides])
    script.write_text(f"#!/bin/bash\ncd {ROOT}\nexec {command}\n")
    job = subprocess.run(["sbatch", "--parsable", "--requeue", "--open-mode=append", f"--partition={partition}",
                          "--time=10",
                          f"--output={tmp_path}/slurm-%j.out", str(script)], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip().split(";")[0]
    # under the job's 10-minute limit; 400 s ran out on a loaded machine at step 580 of 600 (2026-12-04)
    deadline = time.monotonic() + 570
    while RunStore(run).status().get("step", 0) < 10:
        assert time.monotonic() < deadline, "the job did not reach step 10"
        time.sleep(0.05)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True, timeout=30)
    assert _drive(reference, "none", overrides) == 0  # meanwhile, until the requeued job restarts
    while RunStore(run).status()["state"] != "completed":
        assert time.monotonic() < deadline, f"the requeued job did not finish: {RunStore(run).status()}"
        time.sleep(0.5)
    log = "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert "SIGUSR1 at step" in log and "leaving for requeue" in log, log[-2000:]
    assert_same_run(reference, run)
