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
