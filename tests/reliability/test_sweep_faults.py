"""Faults in a local sweep: a launch killed mid-grid and relaunched loses nothing and reruns nothing, and ends
with the run store of an uninterrupted sweep; a trial whose loss goes NaN fails with step and reason while
the rest of the grid completes, and `sweep status` lists it."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from study.runstore import RunStore
from sweeps.execute import NAN_FAULT_FILE
from tests.grid_specs import attempts, cli_process, launch_argv, run_dirs, write_grid_spec
from tests.reliability.conftest import assert_same_run
from unihetero.cli import main


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _trials(runs: Path) -> list[dict]:
    return json.loads((runs / "grids" / "g__smoke.json").read_text())["trials"]


@pytest.mark.slow
def test_sweep_killed_mid_grid_and_relaunched_equals_an_uninterrupted_sweep(tmp_path):
    grid = write_grid_spec(tmp_path, **{"train.samples_seen": 320})  # 3 trials (seeds), 20 steps, checkpoints at 10
    runs, reference = tmp_path / "runs", tmp_path / "reference"
    first, middle, last = run_dirs(grid, runs)
    proc = cli_process(launch_argv(grid, runs))
    deadline = time.monotonic() + 240
    # kill -9 the whole launch once the first trial is done and the second is past its first checkpoint
    while not (RunStore(first).status()["state"] == "completed" and RunStore(middle).status().get("step", 0) >= 10
               and RunStore(middle).checkpoints()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert RunStore(middle).status()["state"] == "running"  # killed mid-trial
    assert not (last / "status.json").exists() or RunStore(last).status()["state"] == "pending"
    done_before = _files(first)

    assert main(launch_argv(grid, runs)) == 0
    assert _files(first) == done_before  # the completed trial was not touched, let alone rerun
    assert [len(attempts(d)) for d in (first, middle, last)] == [1, 2, 1]
    assert attempts(middle)[1]["from_step"] >= 10  # resumed from its checkpoint

    assert main(launch_argv(grid, reference)) == 0
    assert _trials(runs) == _trials(reference)
    for run in (first, middle, last):  # nothing lost: every run equals its uninterrupted twin
        assert_same_run(reference / run.name, run)


@pytest.mark.slow
def test_nan_loss_in_a_sweep_fails_that_trial_and_the_sweep_goes_on(tmp_path, capsys):
    grid = write_grid_spec(tmp_path, **{"train.samples_seen": 160})  # 3 trials of 10 steps
    runs = tmp_path / "runs"
    dirs = run_dirs(grid, runs)
    bad = dirs[1]
    bad.mkdir(parents=True)
    (bad / NAN_FAULT_FILE).write_text("3")  # fault injection: the loss of step 3 of the middle trial is NaN

    assert main(launch_argv(grid, runs)) == 1  # not all completed
    status = RunStore(bad).status()
    assert status["state"] == "failed" and status["step"] == 3
    assert status["reason"] == "non-finite loss at step 3: total=nan"
    assert [RunStore(d).status()["state"] for d in dirs] == ["completed", "failed", "completed"]

    capsys.readouterr()
    assert main(["sweep", "status", str(grid), "--preset", "smoke", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "2/3 completed, 0 running, 0 interrupted, 1 failed, 0 pending" in out
    (row,) = [line for line in out.splitlines() if bad.name in line]
    assert "failed" in row and "3/10" in row and "non-finite loss at step 3: total=nan" in row

    assert main(launch_argv(grid, runs)) == 1  # a relaunch leaves the failure as it is and reruns nothing
    assert [len(attempts(d)) for d in dirs] == [1, 1, 1]
    assert main(launch_argv(grid, runs, "--retry-failed")) == 0  # asked to, it retries (the fault is gone)
    assert [len(attempts(d)) for d in dirs] == [1, 2, 1]
    assert RunStore(bad).status()["state"] == "completed"
