"""Preemption with a real signal: SIGUSR1, SIGTERM or submitit's signal (SIGUSR2, or $SUBMITIT_PREEMPT_SIGNAL)
mid-step makes the run, a VLM or an encoder-pretraining stage, checkpoint that step and leave (the default handler
then ends the process); the resumed run ends exactly as one that never stopped."""

import os
import re
import signal

import pytest

from study.errors import UserError
from study.preemption import Preemption, preemption_signals
from study.runstore import RunStore
from tests.reliability.conftest import assert_same_run
from tests.reliability.test_kill_resume import _drive


@pytest.mark.slow
@pytest.mark.parametrize("name", ["USR1", "TERM", "USR2"])
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


@pytest.mark.slow
def test_an_encoder_pretraining_stage_checkpoints_at_submitits_signal_and_resumes_exactly(tmp_path):
    overrides = ["objective.task=contrastive", "train.samples_seen=320", "train.checkpoint_every=5",
                 "eval.num_images=4", "eval.probe_images=20"]
    reference, victim = tmp_path / "reference", tmp_path / "victim"
    assert _drive(reference, "none", overrides) == 0
    assert _drive(victim, "signal:12:USR2", overrides) == -signal.SIGUSR2
    store = RunStore(victim)
    assert store.status()["preempted"] == "SIGUSR2" and store.status()["step"] == 13
    assert store.checkpoints()[-1].name == "step_00000013.pt"
    assert _drive(victim, "none", overrides) == 0
    assert_same_run(reference, victim)


def test_submitits_signal_is_read_from_submitits_environment(monkeypatch):
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    assert signal.SIGUSR2 in preemption_signals()
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "HUP")
    assert preemption_signals() == (signal.SIGUSR1, signal.SIGTERM, signal.SIGHUP)
    before = signal.getsignal(signal.SIGHUP)
    with Preemption() as preemption:
        os.kill(os.getpid(), signal.SIGHUP)
        assert preemption.received == signal.SIGHUP  # caught, not the default (which ends the process)
    assert signal.getsignal(signal.SIGHUP) == before
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "NOPE")
    with pytest.raises(UserError, match="SUBMITIT_PREEMPT_SIGNAL='NOPE' names no signal"):
        preemption_signals()


def stopped_and_resumed(log: str) -> list[tuple[int, int]]:
    """(step at the signal, step the next start resumed from) for each preemption in a job's log."""
    stops = [int(m) for m in re.findall(r"stopped by SIG\w+ at step (\d+) \(checkpoint written\)", log)]
    resumes = [int(m) for m in re.findall(r"resumed from the checkpoint of step (\d+)", log)]
    return list(zip(stops, resumes, strict=False))


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("name", ["USR1", "USR2"])
def test_a_plain_slurm_job_warned_by_a_signal_checkpoints_requeues_itself_and_resumes_at_that_step(tmp_path, name):
    """`sbatch --signal=USR1@T` (or USR2) as Slurm delivers it (`scancel --signal=... --batch`, the time-limit warning
    sent now): the job writes the preemption checkpoint, requeues itself, and its second start resumes from exactly
    that step."""
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
                          "--time=10", f"--signal=B:{name}@1",
                          f"--output={tmp_path}/slurm-%j.out", str(script)], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip().split(";")[0]
    # under the job's 10-minute limit; 400 s ran out on a loaded machine at step 580 of 600 (2026-12-04)
    deadline = time.monotonic() + 570
    while RunStore(run).status().get("step", 0) < 10:
        assert time.monotonic() < deadline, "the job did not reach step 10"
        time.sleep(0.05)
    subprocess.run(["scancel", f"--signal={name}", "--batch", job], check=True, timeout=30)
    assert _drive(reference, "none", overrides) == 0  # meanwhile, until the requeued job restarts
    while RunStore(run).status()["state"] != "completed":
        assert time.monotonic() < deadline, f"the requeued job did not finish: {RunStore(run).status()}"
        time.sleep(0.5)
    log = "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert f"SIG{name} at step" in log and "leaving for requeue" in log, log[-2000:]
    ((stopped, resumed),) = stopped_and_resumed(log)
    assert resumed == stopped  # from the preemption checkpoint, not from the periodic one before it
    assert_same_run(reference, run)
