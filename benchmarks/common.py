"""Shared helpers for benchmarks: machine name, timing, writing results."""

from __future__ import annotations

import json
import platform
import socket
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine() -> str:
    """This machine's name in result files: host and architecture."""
    return f"{socket.gethostname()}-{platform.machine()}"


def best_rate(fn: Callable[[], int], repeats: int = 3) -> float:
    """Items per second of the fastest of `repeats` calls (fn returns how many items it made)."""
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        n = fn()
        best = max(best, n / (time.perf_counter() - t))
    return best


def write_result(name: str, result: dict) -> Path:
    """Write a benchmark's result as `results/<name>-<machine>.json`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{machine()}.json"
    path.write_text(json.dumps(result, indent=1))
    return path
