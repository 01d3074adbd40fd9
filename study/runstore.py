"""The run store: one directory per run, the contract between training, sweeps and analysis.

    config.yaml     resolved config (run id = its hash)
    status.json     pending | running | completed | failed (+ reason, step, timestamps, host, job id)
    metrics.jsonl   one record per logged step (append-only, flushed per record)
    eval.jsonl      one record per evaluation
    checkpoints/    step_XXXXXXXX.pt (one file) or step_XXXXXXXX/ (sharded), the last two kept: written and read by
                    study/checkpoint.py, which holds every checkpoint's I/O

Every whole-file write is atomic (temp file, fsync, rename); the run itself writes its status. In a run of several
ranks rank 0 writes, and the others hold a `FollowerStore`, which reads and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from study.config import RunConfig, from_dict
from study.errors import UserError
from study.files import atomic_write, naming
from study.tracking import Trackers, check_installed

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's: the same values, ~8x faster to read


def os_error_behind(e: BaseException) -> OSError | None:
    """The OSError behind `e`: torch.save reports its file's failed write as a RuntimeError."""
    seen: BaseException | None = e
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    return seen


def sha256(path: Path | str) -> str:
    """The sha256 hex digest of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL file; a corrupt line is skipped with a warning naming the file and line."""
    if not path.exists():
        return []
    records = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            warnings.warn(f"{path}:{lineno}: corrupt record skipped", stacklevel=2)
            continue
        records.append(record)
    return records


class RunStore:
    """A run directory: its config, status, append-only metric records and checkpoints."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.checkpoint_dir = self.path / "checkpoints"
        self.trackers: Trackers | None = None  # mirrors of appended records (train.trackers)
        self._tracker_config: RunConfig | None = None  # set by init when the run names trackers

    # -- config -------------------------------------------------------------------------------
    def init(self, cfg: RunConfig) -> None:
        """Create the run directory with its config, or check an existing one holds the same config."""
        if cfg.train.trackers:
            check_installed(cfg.train.trackers)  # before anything is written
            self._tracker_config = cfg
        config_path = self.path / "config.yaml"
        if config_path.exists():
            existing = self.config()
            if existing.identity() != cfg.identity():
                raise UserError(f"run directory '{self.path}' holds a different config (run id "
                                f"{existing.run_id()}, asked for {cfg.run_id()})")
        else:
            atomic_write(config_path, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
            self.write_status("pending")

    def config(self) -> RunConfig:
        """The run's config, read back from its config.yaml."""
        path = self.path / "config.yaml"
        try:
            values = yaml.load(path.read_text(), Loader=SAFE_LOADER)
        except (OSError, yaml.YAMLError) as e:
            raise UserError(f"cannot read run config '{path}': {e.__class__.__name__}") from None
        return from_dict(values)

    # -- status -------------------------------------------------------------------------------
    def status(self) -> dict:
        """The run's status.json ('unknown' state when it cannot be read)."""
        path = self.path / "status.json"
        try:
            status = json.loads(path.read_text())
            if isinstance(status, dict) and "state" in status:
                return status
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            pass
        if path.exists():
            warnings.warn(f"{path}: unreadable status file, treated as unknown", stacklevel=2)
        return {"state": "unknown"}

    def write_status(self, state: str, **fields: Any) -> None:
        """Replace the run's status (kept: when it started), stamped with time, host, pid and Slurm job."""
        previous = self.status() if (self.path / "status.json").exists() else {}
        now = time.time()
        status = {"state": state, "updated_at": now, "started_at": previous.get("started_at", now),
                  "host": socket.gethostname(), "pid": os.getpid()}
        job = os.environ.get("SLURM_JOB_ID")
        if job:
            status["backend_job_id"] = f"slurm:{job}"
        status.update(fields)
        atomic_write(self.path / "status.json", json.dumps(status, indent=1).encode())
        if state in ("completed", "failed"):
            self.close_trackers()

    def close_trackers(self) -> None:
        """Finish the trackers' runs: at the end of this process's part of the run (done, stopped, failed); a later
        part opens them again and first sends each what it lacks."""
        if self.trackers is not None:
            self.trackers.close()
        self.trackers, self._tracker_config = None, None

    # -- records ------------------------------------------------------------------------------
    def append(self, name: str, record: dict) -> None:
        """Append one record to a JSON-lines file of the run, durably, and pass it on to the trackers. After a line
        cut short (a process killed while writing it) the record starts a line of its own, so only the cut one is
        lost."""
        if self._tracker_config is not None and self.trackers is None:  # at the first record: none for a done run
            self.trackers = Trackers(self._tracker_config, self.path, backlog=self.records)
        try:
            with open(self.path / name, "a+b") as f:
                cut = f.tell() > 0 and os.pread(f.fileno(), 1, f.tell() - 1) != b"\n"
                f.write(("\n" if cut else "").encode() + (json.dumps(record) + "\n").encode())
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            if e.filename:
                raise
            raise naming(e, self.path / name) from e
        if self.trackers is not None:
            self.trackers.record(name, record)

    def records(self, name: str) -> list[dict]:
        """The records of one JSON-lines file of the run."""
        return read_jsonl(self.path / name)

    def truncate_records(self, name: str, after_step: int) -> None:
        """Drop records of steps after `after_step` (work lost by an interruption is redone)."""
        kept = [r for r in self.records(name) if r.get("step", 0) <= after_step]
        atomic_write(self.path / name, "".join(json.dumps(r) + "\n" for r in kept).encode())

    # -- checkpoints --------------------------------------------------------------------------
    def remove_partial_writes(self) -> None:
        """Delete temp files and directories left by a write that was killed before its rename."""
        for tmp in self.path.glob("**/.*.tmp"):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)

    def checkpoints(self) -> list[Path]:
        """The checkpoints kept, oldest first: step_XXXXXXXX.pt files and sharded step_XXXXXXXX directories."""
        found = [p for p in self.checkpoint_dir.glob("step_*") if p.suffix == ".pt" or p.is_dir()]
        return sorted(found, key=checkpoint_step)



def open_run(path: str | Path, command: str) -> RunStore:
    """The run store of an existing run directory, or a UserError naming the command and the path."""
    store = RunStore(path)
    if not (store.path / "config.yaml").is_file():
        raise UserError(f"{command} '{path}': not a run directory (no config.yaml)")
    return store


class FollowerStore(RunStore):
    """The run store as a rank other than 0 sees it: it reads, and every write is left to rank 0."""

    def init(self, cfg: RunConfig) -> None:
        pass

    def write_status(self, state: str, **fields: Any) -> None:
        pass

    def append(self, name: str, record: dict) -> None:
        pass

    def truncate_records(self, name: str, after_step: int) -> None:
        pass

    def remove_partial_writes(self) -> None:
        pass


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint file or directory (step_XXXXXXXX[.pt])."""
    return int(path.name.removeprefix("step_").removesuffix(".pt"))
