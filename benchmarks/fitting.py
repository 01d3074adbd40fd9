"""One scaling-law fit and a multi-start bootstrap, serial vs parallel over the cores (Epoch data)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import numpy as np
import polars as pl

from analysis import scaling
from analysis.reference_data import CHINCHILLA_EPOCH_CSV as EPOCH_CSV
from benchmarks.common import write_result


def epoch_points() -> tuple[np.ndarray, np.ndarray]:
    """The Chinchilla points as Epoch AI reconstructed them (parameters, tokens = FLOP / 6N) with their losses, the 5
    highest losses dropped."""
    df = pl.read_csv(EPOCH_CSV).sort("loss").head(-5)  # the 5 highest-loss runs dropped
    n, c = df["Model Size"].to_numpy(), df["Training FLOP"].to_numpy()
    return np.stack([n, c / (6 * n)], axis=1), df["loss"].to_numpy()


def timed(fn: Callable[[], object]) -> float:
    """Seconds `fn` took."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(resamples: str = "1000") -> dict:
    x, y = epoch_points()
    b = int(resamples)
    cores = os.cpu_count() or 1
    single = timed(lambda: scaling.fit("chinchilla", x, y))
    serial = timed(lambda: scaling.fit("chinchilla", x, y, starts=32, n_boot=b, workers=1))
    parallel = timed(lambda: scaling.fit("chinchilla", x, y, starts=32, n_boot=b, workers=cores))
    result = {"full_grid_fit_s": single, "bootstrap_resamples": b, "bootstrap_serial_s": serial,
              "bootstrap_parallel_s": parallel, "workers": cores, "speedup": serial / parallel}
    print(f"fitting: full-grid fit {single:.1f} s; {b}-resample bootstrap serial {serial:.0f} s vs {cores} workers "
          f"{parallel:.0f} s -> {serial / parallel:.2f}x -> {write_result('fitting', result)}")
    return result


if __name__ == "__main__":
    main(*sys.argv[1:])
