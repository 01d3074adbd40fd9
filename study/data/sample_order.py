"""The global order of training samples over shards: a function of (seed, epoch, position) alone.

No rank or DataLoader worker enters it, so runs on any number of either, and a run resumed on another world
size, see the same global batches: global batch j is positions [j B, (j + 1) B), and rank r of W takes its
slice [j B + r B / W, j B + (r + 1) B / W). Position p is sample p mod D of epoch p // D. In epoch e the
D-subset's shards are permuted by (seed, e) and their samples concatenated; that sequence is shuffled within
consecutive windows of `window` positions, each by (seed, e, window) (a block shuffle, as in MosaicML
Streaming: reads stay local to a few shards, and window 1 keeps shard order).

Reading a position needs random access into a shard: `TarSamples` indexes a tar's members once (headers only)
and reads one sample's members by offset.
"""

from __future__ import annotations

import functools
import tarfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

OPEN_SHARDS = 8  # tar files a reader keeps open


class GlobalOrder:
    """Position -> (shard part, sample index in it) for a D-subset of shard parts."""

    def __init__(self, parts: list, seed: int, window: int):
        self.parts, self.seed, self.window = parts, seed, max(1, window)
        self.size = sum(p.limit for p in parts)
        self._shards = functools.lru_cache(maxsize=2)(self._shard_layout)
        self._windows = functools.lru_cache(maxsize=4)(self._window_order)

    def _shard_layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard permutation of the epoch, the first position of each permuted shard)."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.parts))
        limits = np.array([self.parts[i].limit for i in order])
        return order, np.concatenate([[0], np.cumsum(limits)[:-1]])

    def _window_order(self, epoch: int, window: int) -> np.ndarray:
        length = min(self.window, self.size - window * self.window)
        return np.random.default_rng([self.seed, epoch, window]).permutation(length)

    def locate(self, position: int) -> tuple:
        epoch, offset = divmod(position, self.size)
        window, within = divmod(offset, self.window)
        offset = window * self.window + int(self._windows(epoch, window)[within])
        order, starts = self._shards(epoch)
        k = int(np.searchsorted(starts, offset, side="right")) - 1
        return self.parts[order[k]], offset - int(starts[k])


class TarSamples:
    """Random access to the samples of WebDataset tars: (key, {extension: bytes}) by index within a shard."""

    def __init__(self):
        self._open: OrderedDict[Path, tuple[tarfile.TarFile, list, str | None]] = OrderedDict()

    def _shard(self, path: Path) -> tuple[tarfile.TarFile | None, list, str | None]:
        """(open tar, samples as (key, [members]) in order, the reason reading stopped early or None)."""
        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path]
        tar, samples, failure = None, [], None
        try:
            tar = tarfile.open(path, mode="r:*")  # noqa: SIM115 (kept open for reads, closed when evicted)
            for member in tar:
                if not member.isfile():
                    continue
                stem = member.name.rsplit("/", 1)[-1].partition(".")[0]
                if not samples or samples[-1][0] != stem:
                    samples.append((stem, []))
                samples[-1][1].append(member)
        except (OSError, tarfile.TarError, EOFError) as e:
            failure = f"unreadable tar: {e.__class__.__name__}"
            if samples:
                samples.pop()  # its last sample may have lost members
        self._open[path] = (tar, samples, failure)
        if len(self._open) > OPEN_SHARDS:
            old, _, _ = self._open.popitem(last=False)[1]
            if old is not None:
                old.close()
        return self._open[path]

    def read(self, path: Path, index: int) -> tuple[str | None, dict[str, bytes] | None, str | None]:
        """(key, sample, None), or (key or None, None, reason) when the sample cannot be read."""
        tar, samples, failure = self._shard(path)
        if index >= len(samples):
            return None, None, failure or f"shard has {len(samples)} samples, not {index + 1}"
        key, members = samples[index]
        try:
            sample = {m.name.rsplit("/", 1)[-1].partition(".")[2].lower(): tar.extractfile(m).read()
                      for m in members}
        except (OSError, tarfile.TarError, EOFError) as e:
            return key, None, f"unreadable tar: {e.__class__.__name__}"
        return key, sample, None
