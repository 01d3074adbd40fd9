"""Writing WebDataset shards (read by `study.data.shards`) from a folder of captioned images or from the world.

A folder holds image files, each with its caption in a text file of the same name (`cat.jpg`, `cat.txt`);
images are stored as they are (bytes unchanged), in file-name order. World samples are rendered as PNG
with their caption words joined by spaces.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from study.data.shards import IMAGE_EXTS, INDEX
from study.data.world import World
from study.errors import UserError
from study.files import atomic_write


def folder_samples(folder: Path) -> Iterator[tuple[str, bytes, str]]:
    """(image extension, image bytes, caption) of every captioned image in `folder`, by file name."""
    images = sorted(p for p in folder.iterdir() if p.suffix.lower().lstrip(".") in IMAGE_EXTS)
    captioned = [p for p in images if p.with_suffix(".txt").is_file()]
    if not captioned:
        raise UserError(f"data shards: '{folder}' holds no image with a same-name .txt caption")
    for path in captioned:
        yield path.suffix.lower().lstrip("."), path.read_bytes(), path.with_suffix(".txt").read_text().strip()


def world_samples(world: World, count: int, chunk: int = 256) -> Iterator[tuple[str, bytes, str]]:
    """The world's training indices [0, count) as PNG images with their captions."""
    for start in range(0, count, chunk):
        images, scenes = world.batch(np.arange(start, min(count, start + chunk)))
        for image, scene in zip(images, scenes, strict=True):
            buffer = io.BytesIO()
            Image.fromarray((image * 255).round().astype(np.uint8)).save(buffer, format="PNG")
            yield "png", buffer.getvalue(), " ".join(scene.caption)


def write_shards(samples: Iterator[tuple[str, bytes, str]], out: Path, shard_size: int) -> dict:
    """Write `samples` into tar shards of `shard_size` samples and the index; returns the index."""
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict] = []
    writer = None
    for i, (ext, image, caption) in enumerate(samples):
        if i % shard_size == 0:
            if writer is not None:
                writer.close()
            shards.append({"name": f"shard-{len(shards):06d}.tar", "samples": 0})
            writer = wds.TarWriter(str(out / shards[-1]["name"]))
        writer.write({"__key__": f"{i:09d}", ext: image, "txt": caption})
        shards[-1]["samples"] += 1
    if writer is not None:
        writer.close()
    index = {"shards": shards, "samples": sum(s["samples"] for s in shards)}
    atomic_write(out / INDEX, json.dumps(index, indent=1).encode())
    return index
