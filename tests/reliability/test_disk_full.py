"""The disk fills while a checkpoint is written: the run stops with one clear line (status failed, the reason
naming ENOSPC and the checkpoint), the previous checkpoint is intact, and once space is freed a resume ends
exactly as an uninterrupted run.

Two ways to fill the disk: a real 8 MiB tmpfs (needs root and a kernel that mounts one; skipped otherwise),
and an injected write error (ENOSPC raised halfway through the checkpoint's bytes), which runs anywhere."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import study.runstore as runstore
from study.runstore import RunStore
from study.train import train
from tests.reliability.conftest import RUN_OVERRIDES, assert_same_run, run_config
from unihetero.cli import main

GOOD_STEP, FAILING_STEP = 5, 10  # checkpoints every 5 steps: step 5 is written, step 10 hits the full disk


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs of `size` on `path`; None if done, else why not."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "not root or no mount(8)"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True, timeout=30)
    return None if done.returncode == 0 else f"mount failed: {done.stderr.strip()}"


class _FillsUp:
    """A file whose disk is full after `room` more bytes: the write that crosses it raises ENOSPC."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.f.write(data[:self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("disk", ["tmpfs", "injected"])
def test_disk_full_during_checkpoint_stops_cleanly_and_resumes(disk, tmp_path, monkeypatch, capsys, reference_run):
    cfg = run_config()
    if disk == "tmpfs":
        mnt = tmp_path / "disk"
        mnt.mkdir()
        why_not = _mount_tmpfs(mnt, "8m")
        if why_not:
            pytest.skip(f"no size-limited file system here ({why_not}); the injected case covers this")
        runs = mnt / "runs"
    else:
        runs = tmp_path / "runs"
    run = runs / cfg.run_id()
    try:
        train(cfg, run, until_step=GOOD_STEP, quiet=True)
        (good,) = RunStore(run).checkpoints()
        good_sha, size = _sha(good), good.stat().st_size
        if disk == "tmpfs":  # leave room for the small records, but only for half a checkpoint
            free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
            (mnt / "filler").write_bytes(bytes(free - size // 2))
        else:
            real_save = torch.save

            def save(state, f):
                real_save(state, _FillsUp(f, size // 2) if state.get("step") == FAILING_STEP else f)

            monkeypatch.setattr(torch, "save", save)

        capsys.readouterr()
        assert main(["train", "tiny", *RUN_OVERRIDES, "--runs-dir", str(runs), "--quiet"]) == 1
        notice, err = capsys.readouterr().err.split("\n", 1)  # where it went on (as in a job log), then the error
        assert notice == f"resumed from the checkpoint of step {GOOD_STEP}", notice
        failing = run / "checkpoints" / f"step_{FAILING_STEP:08d}.pt"
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "ENOSPC" in err and "No space left on device" in err and str(failing) in err, err

        status = RunStore(run).status()
        assert status["state"] == "failed" and status["step"] == GOOD_STEP
        assert "ENOSPC" in status["reason"] and str(failing) in status["reason"], status
        # the previous checkpoint is intact (same bytes, loadable) and the failed one left nothing behind
        assert RunStore(run).checkpoints() == [good] and _sha(good) == good_sha
        assert torch.load(good, weights_only=True)["step"] == GOOD_STEP
        assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]

        # space is freed: a resume continues from the intact checkpoint and loses nothing
        monkeypatch.undo()
        if disk == "tmpfs":
            (mnt / "filler").unlink()
        assert main(["train", "--resume", str(run), "--quiet"]) == 0
        assert_same_run(reference_run, run)
    finally:
        if disk == "tmpfs":
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_status_write_failing_too_still_gives_one_line(tmp_path, monkeypatch, capsys):
    """A disk so full that even status.json cannot be written: still one line and exit 1, no traceback."""
    real = runstore.atomic_write

    def full(path, data):
        if path.name != "config.yaml":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr(runstore, "atomic_write", full)
    assert main(["train", "tiny", *RUN_OVERRIDES, "--runs-dir", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ENOSPC" in err and "status.json" in err, err
