"""The local backend through the CLI: a grid completes, relaunch skips, a killed sweep resumes, a trial process
that dies ends its trial alone (its exit code or signal named), and two launches at once run every trial exactly
once."""

import json
import os
import signal
import time
from types import SimpleNamespace

import pytest

from study.runstore import RunStore
from sweeps.backends.local import _Worker
from sweeps.execute import FAULT_EXIT_CODE, FAULT_FILE
from sweeps.lock import pid_alive, read_lock
from tests.grid_specs import attempts, cli_process, launch_argv, run_dirs, write_grid_spec
from unihetero.cli import main


@pytest.mark.slow
def test_grid_completes_with_workers_and_relaunch_skips(tmp_path, capsys):
    grid, runs = write_grid_spec(tmp_path), tmp_path / "runs"
    assert main(launch_argv(grid, runs, "--workers", "2")) == 0
    dirs = run_dirs(grid, runs)
    assert [RunStore(d).status()["state"] for d in dirs] == ["completed"] * 3
    membership = json.loads((runs / "grids" / "g__smoke.json").read_text())
    assert [t["run_id"] for t in membership["trials"]] == [d.name for d in dirs]
    before = [(d / "metrics.jsonl").read_text() for d in dirs]
    assert main(launch_argv(grid, runs)) == 0
    assert [(d / "metrics.jsonl").read_text() for d in dirs] == before
    assert [len(attempts(d)) for d in dirs] == [1, 1, 1]
    capsys.readouterr()
    assert main(["sweep", "status", str(grid), "--preset", "smoke", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "3/3 completed, 0 running, 0 interrupted, 0 failed, 0 pending" in out
    assert out.count("completed  4/4") == 3


@pytest.mark.slow
def test_killed_sweep_resumes_its_running_trial(tmp_path, capsys):
    grid = write_grid_spec(tmp_path, "seeds: [0]\n", **{"train.samples_seen": 480})
    runs = tmp_path / "runs"
    (run,) = run_dirs(grid, runs)
    proc = cli_process(launch_argv(grid, runs))
    deadline = time.monotonic() + 120
    while RunStore(run).status().get("step", 0) < 10 or not RunStore(run).checkpoints():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = [r for r in RunStore(run).records("metrics.jsonl") if r["step"] <= 10]
    assert RunStore(run).status()["state"] == "running"
    main(["sweep", "status", str(grid), "--preset", "smoke", "--runs-dir", str(runs)])
    assert "0/1 completed, 0 running, 1 interrupted" in capsys.readouterr().out

    assert main(launch_argv(grid, runs)) == 0
    store = RunStore(run)
    assert store.status()["state"] == "completed"
    first, second = attempts(run)
    assert first["from_step"] == 0 and second["from_step"] >= 10  # resumed, not restarted
    metrics = store.records("metrics.jsonl")
    assert metrics[:len(kept)] == kept  # records written before the kill are kept as they were
    assert [m["step"] for m in metrics] == list(range(5, 31, 5))


@pytest.mark.slow
def test_a_killed_launcher_takes_its_worker_processes_with_it(tmp_path, capsys):
    grid = write_grid_spec(tmp_path, **{"train.samples_seen": 4800})
    runs = tmp_path / "runs"
    dirs = run_dirs(grid, runs)
    proc = cli_process(launch_argv(grid, runs, "--workers", "2"))
    deadline = time.monotonic() + 120
    while len(held := [d for d in dirs if RunStore(d).checkpoints() and read_lock(d)]) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    workers = [read_lock(d)["pid"] for d in held]
    assert proc.pid not in workers and all(map(pid_alive, workers))
    os.kill(proc.pid, signal.SIGKILL)  # the launcher alone: its workers are not sent anything
    proc.wait()
    deadline = time.monotonic() + 60
    while any(map(pid_alive, workers)):
        assert time.monotonic() < deadline, "a worker process outlived its launcher"
        time.sleep(0.1)
    main(["sweep", "status", str(grid), "--preset", "smoke", "--runs-dir", str(runs)])
    assert "0/3 completed, 0 running, 2 interrupted, 0 failed, 1 pending" in capsys.readouterr().out

    assert main(launch_argv(grid, runs, "--workers", "2")) == 0
    for run in held:  # each resumed from a checkpoint, not from the start
        assert RunStore(run).status()["state"] == "completed"
        first, second = attempts(run)
        assert first["from_step"] == 0 and second["from_step"] > 0


@pytest.mark.slow
def test_two_concurrent_launches_run_each_trial_once(tmp_path):
    grid = write_grid_spec(tmp_path, **{"train.samples_seen": 160})
    runs = tmp_path / "runs"
    procs = [cli_process(launch_argv(grid, runs)) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    # a launch that skipped trials the other one held may end before them: exit 1, "running" listed
    assert all(p.returncode in (0, 1) for p in procs), outputs
    for run in run_dirs(grid, runs):
        assert RunStore(run).status()["state"] == "completed"
        assert len(attempts(run)) == 1, attempts(run)


@pytest.mark.slow
def test_a_trial_process_that_dies_ends_that_trial_alone_and_a_relaunch_resumes_it(tmp_path, capsys):
    grid, runs = write_grid_spec(tmp_path, "seeds: [0, 1, 2]\n", **{"train.samples_seen": 320}), tmp_path / "runs"
    dying, beside, queued = run_dirs(grid, runs)
    dying.mkdir(parents=True)
    (dying / FAULT_FILE).write_text("10")  # its process exits right after the checkpoint of step 10, as if killed
    assert main(launch_argv(grid, runs, "--workers", "2")) == 1
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if dying.name in line]
    reason = f"local backend: its trial process died (exit code {FAULT_EXIT_CODE})"
    assert "interrupted" in row and reason in row, out
    for run in (beside, queued):  # the trial training beside it trains on; the one queued behind it still starts
        assert RunStore(run).status()["state"] == "completed" and len(attempts(run)) == 1, attempts(run)
    status = ["sweep", "status", str(grid), "--preset", "smoke", "--runs-dir", str(runs)]
    assert main(status) == 0  # a later status shows the reason too
    (row,) = [line for line in capsys.readouterr().out.splitlines() if dying.name in line]
    assert "interrupted" in row and reason in row, row
    assert main(launch_argv(grid, runs, "--workers", "2")) == 0
    assert json.loads((runs / "launches" / "g__smoke.json").read_text()) == {}  # the clean relaunch cleared it
    assert attempts(dying)[-1]["from_step"] == 10
    assert RunStore(dying).status()["state"] == "completed"


def test_a_worker_killed_by_a_signal_is_reported_with_that_signal(tmp_path):
    worker = _Worker(threads=1)
    worker.task = SimpleNamespace(run_dir=str(tmp_path / "run"))  # the trial it was training, as the launcher holds it
    os.kill(worker.process.pid, signal.SIGKILL)  # as the kernel's out-of-memory killer does
    record = worker.result()
    assert record == {"run_dir": str(tmp_path / "run"), "outcome": "error",
                      "reason": "its trial process died (killed by signal 9) before returning a result"}
    assert worker.task is None and not worker.alive
    worker.stop()
