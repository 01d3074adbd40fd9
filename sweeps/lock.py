"""Per-trial lock: a `.lock` file in the run directory, created with O_EXCL, refreshed by a heartbeat.

The file holds its owner (token, host, pid, tag, times). A lock is stale, and may be taken over, when
its heartbeat is older than `timeout_s`, when its owner is a dead process on this host, or when its
owner tag equals ours (a requeued Slurm job or retried Ray trial: the earlier attempt is gone). Takeover
happens under a second O_EXCL file, `.lock.takeover`, so two contenders never both win.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

LOCK_NAME = ".lock"
TAKEOVER_NAME = ".lock.takeover"
TAKEOVER_STALE_S = 30.0


def read_lock(run_dir: Path) -> dict | None:
    """The lock's owner record, None if there is no lock.

    An unreadable record (its owner died between creating and writing it) is judged by the file's age.
    """
    path = run_dir / LOCK_NAME
    try:
        owner = json.loads(path.read_text())
        if isinstance(owner, dict):
            return owner
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        pass
    try:
        return {"heartbeat_at": path.stat().st_mtime}
    except FileNotFoundError:
        return None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host lives (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no procfs (not Linux), or it ended just now
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # the state follows the parenthesised command name


def is_stale(owner: dict, timeout_s: float, tag: str | None = None) -> bool:
    """Whether the lock held by `owner` may be taken over."""
    beat = owner.get("heartbeat_at")
    if not isinstance(beat, (int, float)) or time.time() - beat > timeout_s:
        return True
    if tag is not None and owner.get("tag") == tag:
        return True
    pid = owner.get("pid")
    return owner.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid)


def _create_exclusive(path: Path, body: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    return True


class TrialLock:
    """`with TrialLock(run_dir) as held:` runs the body with `held` True if this process owns the trial."""

    def __init__(self, run_dir: Path | str, timeout_s: float = 60.0, heartbeat_s: float | None = None,
                 tag: str | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.timeout_s, self.tag = timeout_s, tag
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else max(0.5, timeout_s / 6)
        self.token = uuid.uuid4().hex
        self.held = False
        self._acquired_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict[str, Any]:
        now = time.time()
        return {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "tag": self.tag,
                "acquired_at": self._acquired_at, "heartbeat_at": now}

    def acquire(self) -> bool:
        """Take the lock (or a stale one) and start the heartbeat; False if someone else holds it."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._acquired_at = time.time()
        body = json.dumps(self._record()).encode()
        if not _create_exclusive(self.path, body) and not self._take_over(body):
            return False
        self.held = True
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.run_dir.name}", daemon=True)
        self._thread.start()
        return True

    def _take_over(self, body: bytes) -> bool:
        owner = read_lock(self.run_dir)
        if owner is not None and not is_stale(owner, self.timeout_s, self.tag):
            return False
        guard = self.run_dir / TAKEOVER_NAME
        if not _create_exclusive(guard, self.token.encode()):
            try:  # a contender died mid-takeover: clear its guard, let the next attempt proceed
                if time.time() - guard.stat().st_mtime > TAKEOVER_STALE_S:
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return False
        try:
            if read_lock(self.run_dir) != owner:  # it changed under us: someone else won
                return False
            self.path.unlink(missing_ok=True)
            return _create_exclusive(self.path, body)
        finally:
            guard.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            owner = read_lock(self.run_dir)
            if not owner or owner.get("token") != self.token:
                self.held = False  # taken over: we were presumed dead
                return
            tmp = self.path.with_name(f"{LOCK_NAME}.{self.token}.tmp")
            tmp.write_text(json.dumps(self._record()))
            os.replace(tmp, self.path)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        owner = read_lock(self.run_dir)
        if self.held and owner and owner.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(run_dir: Path, timeout_s: float = 60.0) -> dict | None:
    """The live owner of a trial's lock, or None if it is free or stale."""
    owner = read_lock(run_dir)
    return owner if owner and not is_stale(owner, timeout_s) else None
