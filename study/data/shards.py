"""WebDataset shards of (image, caption) pairs: the index, data-scale subsets and deterministic reading.

A shard directory holds `index.json` (`{"shards": [{"name": ..., "samples": n}, ...]}`) and tar shards
in WebDataset form: members `<key>.<jpg|png|...>` and `<key>.txt`. The last `data.held_out_shards`
shards are held out for evaluation; training uses the first D (`data.unique_samples`) samples of the
others, in index order, and repeats them in epochs when more samples are seen.

Readers: the training stream is split over N = ranks x DataLoader workers readers. In epoch e the
subset's shards are permuted by (seed, e) and reader u reads every N-th of them through a shuffle buffer
seeded by (seed, e, u); its next epoch follows. Each reader cuts its stream into per-rank batches of
batch_size / ranks sample slots and serves every K-th step of its rank (K workers), so a run resumed at
a step skips exactly the slots it had consumed. Images are delivered in [0, 1] at the model's image size
(shorter side resized, centre crop); each consumer normalises (the hf encoder with its own mean and std,
the VAE and the mini model to [-1, 1]). A corrupt sample (undecodable image or caption, a missing part,
an unreadable tar) is skipped, leaving its batch one smaller, and recorded in the run's
`data_errors.jsonl` (step, rank, shard, key, reason).
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from study.config import RunConfig
from study.data.loader import Batch, pad_tokens
from study.data.text import TextCodec
from study.data.tokenizer import max_caption_tokens
from study.errors import UserError

INDEX = "index.json"
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp")
ERRORS = "data_errors.jsonl"
CORRUPT = (ValueError, OSError, SyntaxError, Image.DecompressionBombError)  # what decoding a bad sample raises


@dataclass(frozen=True)
class Part:
    """The first `limit` samples of one shard."""

    path: Path
    limit: int


def read_index(directory: str) -> list[Part]:
    """Every shard of a shard directory, whole, in index order."""
    path = Path(directory) / INDEX
    try:
        shards = json.loads(path.read_text())["shards"]
        return [Part(Path(directory) / s["name"], int(s["samples"])) for s in shards]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"config key 'data.shards': cannot read '{path}': {e.__class__.__name__}") from None


def split(cfg: RunConfig) -> tuple[list[Part], list[Part]]:
    """(training D-subset, held-out shards): the first D samples of the training shards, in index order."""
    parts, d, k = read_index(cfg.data.shards), cfg.data.unique_samples, cfg.data.held_out_shards
    if len(parts) <= k:
        raise UserError(f"config key 'data.held_out_shards': {k} leaves none of the {len(parts)} shards of "
                        f"'{cfg.data.shards}' for training")
    train, held_out = parts[:-k], parts[-k:]
    available = sum(p.limit for p in train)
    if d > available:
        raise UserError(f"config key 'data.unique_samples': {d} exceeds the {available} training samples of "
                        f"'{cfg.data.shards}'")
    subset, left = [], d
    for part in train:
        if left == 0:
            break
        subset.append(Part(part.path, min(left, part.limit)))
        left -= subset[-1].limit
    return subset, held_out


def read_part(part: Part, errors: list[dict]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of a shard's first `limit` samples; an unreadable tar ends it with an error."""
    count, key, sample = 0, None, {}
    try:
        with tarfile.open(part.path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                stem, _, ext = name.partition(".")
                if stem != key and key is not None:
                    yield key, sample
                    count += 1
                    if count == part.limit:
                        return
                    sample = {}
                key = stem
                sample[ext.lower()] = tar.extractfile(member).read()
            if key is not None:
                yield key, sample
    except (OSError, tarfile.TarError, EOFError) as e:
        errors.append({"shard": part.path.name, "key": key, "reason": f"unreadable tar: {e.__class__.__name__}"})


def shuffled(samples: Iterator, buffer: int, rng: np.random.Generator) -> Iterator:
    """Samples through a shuffle buffer of `buffer` entries (1 = unchanged order)."""
    pool: list = []
    for sample in samples:
        if len(pool) < buffer:
            pool.append(sample)
            continue
        i = int(rng.integers(buffer))
        pool[i], sample = sample, pool[i]
        yield sample
    rng.shuffle(pool)
    yield from pool


def decode_image(data: bytes, size: int) -> torch.Tensor:
    """Image bytes -> (3, size, size) float in [0, 1]: shorter side resized to `size`, centre crop."""
    with Image.open(io.BytesIO(data)) as img:
        return fit_image(img, size)


def fit_image(img: Image.Image, size: int) -> torch.Tensor:
    """A PIL image -> (3, size, size) float in [0, 1]: RGB, shorter side resized to `size`, centre crop."""
    img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


class Captions:
    """Caption text -> token ids with start and end, cut to the model's limit; `pad_id` pads batches."""

    def __init__(self, cfg: RunConfig):
        self.codec = TextCodec(cfg)
        self.pad_id = self.codec.pad_id
        self.limit = cfg.data.max_caption_tokens if cfg.model.backbone == "hf" else max_caption_tokens(
            cfg.data.max_objects)

    def __call__(self, text: str) -> list[int]:
        ids, start, end = self.codec.ids(text), self.codec.start, self.codec.end
        if self.codec.tokenizer is None:  # the miniature vocabulary: shards written from the world
            return [start, *ids, end][: self.limit]
        return [start, *ids[: self.limit - 2], end]


def decode_sample(sample: dict[str, bytes], size: int, captions: Captions) -> tuple[torch.Tensor, list[int]]:
    """(image, caption ids) of one raw sample; raises one of CORRUPT when it is corrupt."""
    image_ext = next((e for e in IMAGE_EXTS if e in sample), None)
    if image_ext is None or "txt" not in sample:
        raise ValueError(f"sample lacks {'an image' if image_ext is None else 'a caption'}")
    text = sample["txt"].decode("utf-8").strip()
    if not text:
        raise ValueError("empty caption")
    return decode_image(sample[image_ext], size), captions(text)


def collate(decoded: list[tuple[torch.Tensor, list[int]]], errors: list[dict], pad_id: int, size: int) -> Batch:
    images = torch.stack([d[0] for d in decoded]) if decoded else torch.zeros(0, 3, size, size)
    tokens = pad_tokens([d[1] for d in decoded], pad_id) if decoded else torch.zeros(0, 1, dtype=torch.long)
    return Batch(images, tokens, [], errors)


def decode_batch(raw: list[tuple[str, str, dict]], size: int, captions: Captions, errors: list[dict]) -> Batch:
    """Decode (shard, key, sample) slots into a batch; corrupt ones are dropped and recorded in `errors`."""
    decoded = []
    for shard, key, sample in raw:
        try:
            decoded.append(decode_sample(sample, size, captions))
        except CORRUPT as e:
            errors.append({"shard": shard, "key": key, "reason": f"{e.__class__.__name__}: {e}"[:200]})
    return collate(decoded, errors, captions.pad_id, size)


def reader_parts(parts: list[Part], seed: int, epoch: int, reader: int, readers: int) -> list[Part]:
    """The shards reader `reader` of `readers` reads in `epoch`: every N-th of a (seed, epoch) permutation."""
    return [parts[i] for i in np.random.default_rng([seed, epoch]).permutation(len(parts))[reader::readers]]


def reader_slots(parts: list[Part], seed: int, buffer: int, reader: int, readers: int,
                 errors: list[dict]) -> Iterator[tuple[str, str, dict]]:
    """Reader `reader`'s endless stream of raw (shard, key, sample) slots, epoch after epoch."""
    for epoch in itertools.count():
        mine = reader_parts(parts, seed, epoch, reader, readers)
        raw = ((p.path.name, key, s) for p in mine for key, s in read_part(p, errors))
        yield from shuffled(raw, buffer, np.random.default_rng([seed, epoch, reader]))


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when it is initialised, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def image_size(cfg: RunConfig) -> int:
    if cfg.model.backbone == "hf":
        from study.model.hf import vision_spec

        return vision_spec(cfg.model.vision_path)[0]
    return cfg.data.image_size


class ShardReader(torch.utils.data.IterableDataset):
    """One rank's training batches from `start_step` on, in this process or spread over DataLoader workers."""

    def __init__(self, cfg: RunConfig, start_step: int, rank: int, world: int, workers: int):
        self.parts, self.start, self.rank, self.world = split(cfg)[0], start_step, rank, world
        self.seed, self.buffer = cfg.train.seed, cfg.data.shuffle_buffer
        if cfg.train.batch_size % world:
            raise UserError(f"config key 'train.batch_size': {cfg.train.batch_size} is not divisible by the "
                            f"{world} ranks")
        if len(self.parts) < world * max(1, workers):
            raise UserError(f"config key 'data.workers': {world} ranks x {max(1, workers)} readers need at least "
                            f"as many training shards, the D-subset spans {len(self.parts)}")
        self.batch, self.size, self.captions = cfg.train.batch_size // world, image_size(cfg), Captions(cfg)

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        logical = (worker + self.start) % workers  # DataLoader worker w serves steps start + w, start + w + K, ...
        served = max(0, -(-(self.start - logical) // workers))  # steps j < start with j % K == logical
        errors: list[dict] = []
        slots = reader_slots(self.parts, self.seed, self.buffer, self.rank * workers + logical,
                             self.world * workers, errors)
        for _ in range(served * self.batch):  # resume: skip the slots already trained on, without decoding
            next(slots)
        while True:
            errors.clear()
            raw = [next(slots) for _ in range(self.batch)]
            yield decode_batch(raw, self.size, self.captions, list(errors))


class ShardStream:
    """The training batches of a run from `start_step` on; corrupt samples go to the run's data_errors.jsonl."""

    def __init__(self, cfg: RunConfig, start_step: int, run_dir: Path):
        from study.runstore import RunStore

        self.rank, world = distributed_rank()
        dataset = ShardReader(cfg, start_step, self.rank, world, cfg.data.workers)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=cfg.data.workers)
        self.store, self.step = RunStore(run_dir), start_step
        if self.rank == 0 and (self.store.path / ERRORS).exists():
            self.store.truncate_records(ERRORS, start_step)  # records after the checkpoint are redone
        self.batches: Iterator[Batch] | None = None

    def __iter__(self) -> Iterator[Batch]:
        self.batches = iter(self.loader)
        for batch in self.batches:
            self.step += 1
            for error in batch.errors:
                self.store.append(ERRORS, {"step": self.step, "rank": self.rank, **error})
            if len(batch.images):  # a batch left empty by corrupt samples is skipped
                yield batch

    def close(self) -> None:
        self.batches = None  # DataLoader workers stop when their iterator is released


def held_out_batches(cfg: RunConfig, captions: Captions, count: int, batch: int) -> Iterator[Batch]:
    """The first `count` good samples of the held-out shards, in order, in batches of at most `batch`."""
    size, errors = image_size(cfg), []
    raw = ((p.path.name, key, s) for p in split(cfg)[1] for key, s in read_part(p, errors))
    while count > 0:
        chunk = list(itertools.islice(raw, min(batch, count)))
        if not chunk:
            return
        good = decode_batch(chunk, size, captions, errors)
        count -= len(good.images)
        if len(good.images):
            yield good
