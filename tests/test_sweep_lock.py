"""The per-trial lock and the per-trial execution: exclusive, stale locks taken over, skips."""

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from study.runstore import RunStore
from sweeps.execute import ATTEMPTS, TrialTask, execute_trial
from sweeps.lock import LOCK_NAME, TrialLock, holder, read_lock
from tests.conftest import tiny_config


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_owner(run_dir, **fields):
    run_dir.mkdir(parents=True, exist_ok=True)
    owner = {"token": "other", "host": "elsewhere", "pid": 1, "tag": None, "heartbeat_at": time.time()} | fields
    (run_dir / LOCK_NAME).write_text(json.dumps(owner))


def test_lock_is_exclusive_and_released(tmp_path):
    with TrialLock(tmp_path) as held:
        assert held and read_lock(tmp_path)["pid"] == os.getpid()
        with TrialLock(tmp_path) as second:
            assert not second
        assert holder(tmp_path) is not None
    assert read_lock(tmp_path) is None


def test_heartbeat_refreshes_the_lock(tmp_path):
    with TrialLock(tmp_path, timeout_s=1.0, heartbeat_s=0.1):
        first = read_lock(tmp_path)["heartbeat_at"]
        time.sleep(0.5)
        assert read_lock(tmp_path)["heartbeat_at"] > first
        time.sleep(0.8)  # older than the timeout since acquisition, yet alive
        assert holder(tmp_path, timeout_s=1.0) is not None


@pytest.mark.parametrize("owner", [
    {"heartbeat_at": 0.0},  # heartbeat too old (another host)
    {"host": os.uname().nodename, "pid": None},  # filled below: a dead process on this host
    {"tag": "slurm:42"},  # our own earlier attempt (same Slurm job requeued)
])
def test_stale_locks_are_taken_over(tmp_path, owner):
    if "pid" in owner:
        owner["pid"] = _dead_pid()
    _write_owner(tmp_path, **owner)
    with TrialLock(tmp_path, tag="slurm:42") as held:
        assert held and read_lock(tmp_path)["pid"] == os.getpid()


def test_live_lock_of_another_host_is_respected(tmp_path):
    _write_owner(tmp_path)
    with TrialLock(tmp_path) as held:
        assert not held
    assert read_lock(tmp_path)["token"] == "other"


def _contend(run_dir: str, start: float, queue) -> None:
    time.sleep(max(0.0, start - time.time()))
    lock = TrialLock(run_dir)
    queue.put(lock.acquire())
    time.sleep(1.0)  # hold it while the others try


def test_one_of_many_contenders_wins_a_stale_lock(tmp_path):
    _write_owner(tmp_path, heartbeat_at=0.0)
    ctx = multiprocessing.get_context("fork")  # fast to start; the children use no torch
    queue = ctx.Queue()
    start = time.time() + 0.5
    procs = [ctx.Process(target=_contend, args=(str(tmp_path), start, queue)) for _ in range(6)]
    for p in procs:
        p.start()
    wins = [queue.get(timeout=30) for _ in procs]
    for p in procs:
        p.join()
    assert sum(wins) == 1


FAST = ("train.samples_seen=64", "eval.num_images=4", "eval.probe_images=20", "eval.inference_scaling=false")


def _task(tmp_path, *overrides, **fields) -> TrialTask:
    cfg = tiny_config(*FAST, *overrides)
    return TrialTask(str(tmp_path / cfg.run_id()), cfg.to_dict(), **fields)


def test_execute_runs_once_then_skips(tmp_path):
    task = _task(tmp_path)
    first = execute_trial(task)
    assert (first["outcome"], first["state"], first["step"]) == ("ran", "completed", 4)
    assert execute_trial(task)["outcome"] == "done"
    assert len(RunStore(task.run_dir).records(ATTEMPTS)) == 1
    _write_owner(tmp_path / "other")
    locked = execute_trial(TrialTask(str(tmp_path / "other"), task.config))
    assert locked["outcome"] == "locked"


def test_execute_records_a_crash_and_retries_failed_only_when_asked(tmp_path, monkeypatch):
    import study.train

    task = _task(tmp_path)

    def broken(*args, **kwargs):
        raise MemoryError("out of memory")

    monkeypatch.setattr(study.train, "train", broken)
    record = execute_trial(task)
    assert (record["state"], record["reason"]) == ("failed", "crashed: MemoryError: out of memory")
    monkeypatch.undo()
    assert execute_trial(task)["outcome"] == "failed-before"
    retried = execute_trial(TrialTask(task.run_dir, task.config, retry_failed=True))
    assert (retried["outcome"], retried["state"]) == ("ran", "completed")


def test_execute_refuses_a_run_dir_holding_another_config(tmp_path):
    task = _task(tmp_path)
    execute_trial(TrialTask(task.run_dir, task.config, runner="noop"))
    other = tiny_config(*FAST, "train.seed=9").to_dict()
    record = execute_trial(TrialTask(task.run_dir, other))
    assert record["outcome"] == "error" and "holds a different config" in record["reason"]
    assert RunStore(task.run_dir).status()["state"] == "completed"
