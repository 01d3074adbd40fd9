"""Training and held-out batches: deterministic by (seed, step), O(1) memory in the data scale D.

Sample position p of training (p = step * batch + j) lies in epoch p // D; its world index is a
keyed permutation of p mod D, so small D repeats epochs in a fresh deterministic order each time
and resuming at a step needs nothing but the step.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from study.config import RunConfig
from study.data.batch import Batch, make_batch
from study.data.counter_rng import mix64
from study.data.shards import ShardStream
from study.data.world import HELD_OUT_START, World


class KeyedPermutation:
    """A bijection of [0, n) keyed by a seed: a balanced Feistel network with cycle walking."""

    def __init__(self, n: int, seed: tuple[int, ...], rounds: int = 4):
        self.n = n
        bits = max(2, (n - 1).bit_length())
        half = (bits + 1) // 2
        self.half, self.low_mask = np.uint64(half), np.uint64((1 << half) - 1)
        self.keys = np.random.default_rng(list(seed)).integers(0, 2**63, size=rounds, dtype=np.uint64)

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.low_mask
        for key in self.keys:
            left, right = right, left ^ (mix64(right, key) & self.low_mask)
        return (left << self.half) | right

    def __call__(self, i: np.ndarray) -> np.ndarray:
        x = self._feistel(i.astype(np.uint64))
        out_of_range = x >= np.uint64(self.n)
        while out_of_range.any():  # cycle walking: expected < 4 rounds since the domain is < 4n
            x[out_of_range] = self._feistel(x[out_of_range])
            out_of_range = x >= np.uint64(self.n)
        return x.astype(np.int64)


def training_indices(cfg: RunConfig, step: int) -> np.ndarray:
    """World indices of the training batch at `step`."""
    d, b = cfg.data.unique_samples, cfg.train.batch_size
    positions = np.arange(step * b, (step + 1) * b, dtype=np.int64)
    epochs, offsets = positions // d, positions % d
    out = np.empty(b, dtype=np.int64)
    for epoch in np.unique(epochs):
        sel = epochs == epoch
        out[sel] = KeyedPermutation(d, (cfg.train.seed, cfg.data.world_seed, int(epoch)))(offsets[sel])
    return out


def held_out_indices(start: int, count: int) -> np.ndarray:
    """World indices of `count` held-out samples from `start` on (they never enter training)."""
    return HELD_OUT_START + np.arange(start, start + count, dtype=np.int64)


def idle_priority() -> None:
    """Run the calling thread only when a core would otherwise idle (Linux's SCHED_IDLE, which applies to one
    thread; elsewhere the thread keeps its priority). A batch is a pure function of its step, so where it is
    rendered changes nothing in it."""
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


class TrainStream:
    """Training batches of the run's world from `start_step` on, each rendered while the step before it trains, on
    a worker thread of idle priority: it takes the time the step leaves a core free (its serial parts), so it never
    slows the step, and a batch not ready in time is finished while the step waits (on a machine whose every core
    runs torch, a render thread of normal priority only slowed the step down)."""

    def __init__(self, cfg: RunConfig, world: World, start_step: int, prefetch: bool = True):
        self.cfg, self.world, self.step = cfg, world, start_step
        self.pool = ThreadPoolExecutor(max_workers=1, initializer=idle_priority) if prefetch else None

    def _render(self, step: int) -> Batch:
        return make_batch(self.world, training_indices(self.cfg, step))

    def __iter__(self) -> Iterator[Batch]:
        pending = self.pool.submit(self._render, self.step) if self.pool else None
        while True:
            if pending is None:
                batch = self._render(self.step)
            else:
                batch = pending.result()
                pending = self.pool.submit(self._render, self.step + 1)
            self.step += 1
            yield batch

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown(wait=True, cancel_futures=True)


def training_stream(cfg: RunConfig, world: World | None, start_step: int,
                    run_dir: Path | str) -> TrainStream | ShardStream:
    """The run's training batches from `start_step` on: rendered from its world, or read from shards
    (`study.data.shards.ShardStream`, which records corrupt samples in the run directory)."""
    if cfg.data.source == "shards":
        return ShardStream(cfg, start_step, Path(run_dir))
    return TrainStream(cfg, world, start_step)
