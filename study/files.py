"""Durable small writes: a file replaced atomically (temp file, fsync, rename, fsync of the directory), and OS
errors that name the file they were about."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, data: bytes | Callable[[Any], None]) -> None:
    """Write bytes (or let `data(fileobj)` write) to a temp file beside `path`, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                data(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # a full disk, say: the old file stays as it was, the error names this one
        Path(tmp).unlink(missing_ok=True)
        if e.filename:
            raise
        raise naming(e, path) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def naming(e: OSError, path: Path) -> OSError:
    """`e` naming `path` (a failed write or fsync does not say which file it was)."""
    return OSError(e.errno, e.strerror, str(path))
