"""WebDataset shards of (image, caption) pairs: the index, data-scale subsets and deterministic reading.

A shard directory holds `index.json` (`{"shards": [{"name": ..., "samples": n}, ...]}`) and tar shards
in WebDataset form: members `<key>.<jpg|png|...>` and `<key>.txt`. The last `data.held_out_shards`
shards are held out for evaluation; training uses the first D (`data.unique_samples`) samples of the
others, in index order, and repeats them in epochs when more samples are seen.

Readers: the training stream follows one global order of sample positions, a function of (seed, epoch,
position) alone (`study.data.sample_order`): rank r of W takes its slice of every global batch, and with K
DataLoader workers worker w serves every K-th step of its rank. A run on any number of ranks or workers sees
the same global batches, and a resume at step s starts reading at position s x batch_size: no replay.
Images are delivered in [0, 1] at the model's image size
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
from study.data.batch import Batch, pad_tokens
from study.data.hf_files import vision_spec
from study.data.sample_order import GlobalOrder, TarSamples
from study.data.text import TextCodec
from study.data.tokenizer import max_caption_tokens
from study.errors import UserError
from study.runstore import RunStore

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


def decode_image(data: bytes, size: int) -> torch.Tensor:
    """Image bytes -> (3, size, size) uint8: shorter side resized to `size`, centre crop."""
    with Image.open(io.BytesIO(data)) as img:
        return fit_image(img, size)


def fit_image(img: Image.Image, size: int) -> torch.Tensor:
    """A PIL image -> (3, size, size) uint8: RGB, shorter side resized to `size`, centre crop. Images travel as
    bytes (a quarter of float32's) and become floats on the device that uses them (`as_input`)."""
    img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


def as_input(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 images -> float in [0, 1] on `device` (the encoders' input convention)."""
    return images.to(device, non_blocking=True).float().div_(255)


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
    """A batch of decoded samples (images stacked, tokens padded) with the errors of those that failed."""
    images = torch.stack([d[0] for d in decoded]) if decoded else torch.zeros(0, 3, size, size, dtype=torch.uint8)
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


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when it is initialised, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def image_size(cfg: RunConfig) -> int:
    """The side of the images the run's vision encoder takes."""
    return vision_spec(cfg.model.vision_path)[0] if cfg.model.backbone == "hf" else cfg.data.image_size


class ShardReader(torch.utils.data.IterableDataset):
    """One rank's training batches from `start_step` on, in this process or spread over DataLoader workers."""

    def __init__(self, cfg: RunConfig, start_step: int, rank: int, world: int, workers: int):
        self.order = GlobalOrder(split(cfg)[0], cfg.train.seed, cfg.data.shuffle_buffer)
        self.start, self.rank, self.global_batch = start_step, rank, cfg.train.batch_size
        if cfg.train.batch_size % world:
            raise UserError(f"config key 'train.batch_size': {cfg.train.batch_size} is not divisible by the "
                            f"{world} ranks")
        self.batch, self.size, self.captions = cfg.train.batch_size // world, image_size(cfg), Captions(cfg)

    def slots(self, step: int, samples: TarSamples, errors: list[dict]) -> list[tuple[str, str, dict]]:
        """This rank's raw (shard, key, sample) slots of global batch `step`; unreadable ones go to `errors`."""
        first = step * self.global_batch + self.rank * self.batch
        raw = []
        for position in range(first, first + self.batch):
            part, index = self.order.locate(position)
            key, sample, failure = samples.read(part.path, index)
            if failure is None:
                raw.append((part.path.name, key, sample))
            else:
                errors.append({"shard": part.path.name, "key": key, "reason": failure})
        return raw

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        samples = TarSamples()
        for step in itertools.count(self.start + worker, workers):  # worker w serves start + w, start + w + K, ...
            errors: list[dict] = []
            raw = self.slots(step, samples, errors)
            yield decode_batch(raw, self.size, self.captions, errors)


class ShardStream:
    """The training batches of a run from `start_step` on; corrupt samples go to the run's data_errors.jsonl."""

    def __init__(self, cfg: RunConfig, start_step: int, run_dir: Path):
        self.rank, world = distributed_rank()
        dataset = ShardReader(cfg, start_step, self.rank, world, cfg.data.workers)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=cfg.data.workers,
                                                  pin_memory=torch.cuda.is_available(),
                                                  persistent_workers=cfg.data.workers > 0)
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
            yield Batch(as_input(good.images, "cpu"), good.tokens, good.scenes, good.errors)
