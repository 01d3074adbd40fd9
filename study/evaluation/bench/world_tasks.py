"""Benchmark files written from held-out world images, so their answers are known: multiple choice (MMBench TSV
with base64 images, JSONL with image files), count classification (ImageFolder, labelled shards) and COCO-style
captions. The tests write them, and `scripts/world_benchmarks.py` writes a set for a sanity check of
`unihetero bench` on a miniature run.

Multiple choice asks which description of an image's first object is right; its options differ only in colour
(the true one among 4, at a random position). Count classification uses the world's count sentence as prompt.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from study.data.loader import held_out_indices
from study.data.world import COLOURS, NUMBERS, Scene, World

OPTIONS = 4
Question = tuple[bytes, str, list[str], int]  # PNG, question, options, answer index


def world_images(world: World, n: int, start: int = 0) -> list[tuple[bytes, Scene]]:
    """(PNG bytes, scene) of n held-out images of `world`."""
    images, scenes = world.batch(held_out_indices(start, n))
    out = []
    for image, scene in zip(images, scenes, strict=True):
        buffer = io.BytesIO()
        Image.fromarray((image * 255).round().astype(np.uint8)).save(buffer, format="PNG")
        out.append((buffer.getvalue(), scene))
    return out


def colour_questions(world: World, n: int, seed: int = 0) -> list[Question]:
    """Per image: (png, question, options, answer index): which description of its first object is right, the
    true colour among OPTIONS colours, at a random position."""
    rng = np.random.default_rng(seed)
    rows = []
    for png, scene in world_images(world, n):
        obj = scene.objects[0]
        others = [c for c in range(len(COLOURS)) if c != obj.colour]
        colours = [obj.colour, *rng.choice(others, OPTIONS - 1, replace=False)]
        order = rng.permutation(OPTIONS)
        options = [" ".join(replace(obj, colour=int(colours[k])).words()[:-1]) for k in order]
        question = f"there are {NUMBERS[len(scene.objects) - 1]} objects ."
        rows.append((png, question, options, int(np.flatnonzero(order == 0)[0])))
    return rows


def write_tsv(path: Path, rows: list[Question], hint: str = "") -> Path:
    """World questions as a VLMEvalKit / MMBench TSV (options A-E, base64 images)."""
    lines = ["index\tquestion\thint\tA\tB\tC\tD\tE\tanswer\timage"]
    for i, (png, question, options, answer) in enumerate(rows):
        cells = [*options, *[""] * (5 - len(options))]
        lines.append("\t".join([str(i), question, hint, *cells, "ABCDE"[answer], base64.b64encode(png).decode()]))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl(path: Path, rows: list[Question]) -> Path:
    """World questions as a JSONL file with one PNG per question beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (png, question, options, answer) in enumerate(rows):
        (path.parent / f"q{i}.png").write_bytes(png)
        records.append(json.dumps({"id": f"q{i}", "question": question, "options": options, "answer": answer,
                                   "image": f"q{i}.png"}))
    path.write_text("\n".join(records) + "\n")
    return path


COUNT_PROMPT = "there are {} objects ."


def write_count_folder(root: Path, world: World, n: int) -> Path:
    """An ImageFolder of held-out images by object count, with the world's count sentence as prompt."""
    for i, (png, scene) in enumerate(world_images(world, n)):
        folder = root / NUMBERS[len(scene.objects) - 1]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.png").write_bytes(png)
    (root / "prompt.txt").write_text(COUNT_PROMPT)
    return root


def write_count_shards(root: Path, world: World, n: int, shards: int = 2) -> Path:
    """The same task as labelled WebDataset shards: cls = count - 1, names in classes.txt."""
    root.mkdir(parents=True)
    samples = world_images(world, n)
    index = []
    for s in range(shards):
        name = f"bench-{s:03d}.tar"
        mine = samples[s::shards]
        with tarfile.open(root / name, "w") as tar:
            for i, (png, scene) in enumerate(mine):
                for ext, data in (("png", png), ("cls", str(len(scene.objects) - 1).encode())):
                    info = tarfile.TarInfo(f"{s}_{i:05d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        index.append({"name": name, "samples": len(mine)})
    (root / "index.json").write_text(json.dumps({"shards": index}))
    (root / "classes.txt").write_text("\n".join(NUMBERS[: world.cfg.max_objects]) + "\n")
    (root / "prompt.txt").write_text(COUNT_PROMPT)
    return root


def write_captions(path: Path, world: World, n: int) -> Path:
    """`n` world images with their captions as a COCO-style annotations file, the PNGs beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, (png, scene) in enumerate(world_images(world, n)):
        (path.parent / f"c{i}.png").write_bytes(png)
        images.append({"id": i, "file_name": f"c{i}.png"})
        annotations.append({"image_id": i, "caption": " ".join(scene.caption)})
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path
