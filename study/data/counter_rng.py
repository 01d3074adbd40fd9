"""A counter-based random stream: each draw is a hash of (key, counter), so a whole batch's draws come from a
few array operations, in any order, and any one of them can be recomputed alone."""

from __future__ import annotations

import numpy as np

_GOLDEN, _MUL1, _MUL2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SHIFT1, _SHIFT2, _SHIFT3 = np.uint64(30), np.uint64(27), np.uint64(31)


def mix64(x: np.ndarray, key: np.uint64) -> np.ndarray:
    """A 64-bit avalanche hash (splitmix64 finaliser) of x xor key; x is a uint64 array, whose arithmetic wraps
    modulo 2**64 without a warning."""
    z = (x ^ key) + _GOLDEN
    z = (z ^ (z >> _SHIFT1)) * _MUL1
    z = (z ^ (z >> _SHIFT2)) * _MUL2
    return z ^ (z >> _SHIFT3)


def stream_key(*seed: int) -> np.uint64:
    """A key for `uniforms` from integers (a seed and a stream number, say)."""
    return np.random.default_rng(list(seed)).integers(0, 2**63, dtype=np.uint64)


def uniforms(key: np.uint64, indices: np.ndarray, count: int, dtype: type = np.float64) -> np.ndarray:
    """(B, count) uniforms in [0, 1): draw j of index i is a hash of (key, i * count + j); needs i * count < 2**64."""
    counters = indices.astype(np.uint64)[:, None] * np.uint64(count) + np.arange(count, dtype=np.uint64)
    z = mix64(counters, key)
    if dtype == np.float32:
        return (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
    return (z >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)
