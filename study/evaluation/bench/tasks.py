"""Benchmark files read into tasks, every row checked: a malformed file is one error naming the file, the row and
what is wrong; no row is ever skipped.

Layouts (the kind follows from the path):
- `*.tsv`: multiple choice in MMBench's layout, plain or circular, as VLMEvalKit publishes it
  (study/evaluation/bench/mmbench.py).
- `*.jsonl`: multiple choice, one object per line: `question`, `options` (list), `answer` (index or letter),
  `image` (a path relative to the file), optional `hint` and `id`.
- `*.json`: captioning in COCO's layout: `images` [{`id`, `file_name` (relative to the file)}] and
  `annotations` [{`image_id`, `caption`}], every image with at least one caption.
- a directory with `index.json`: labelled WebDataset shards (the training shards' layout) whose samples have an
  image and a `cls` field (class index), with the class names one per line in `classes.txt`.
- any other directory: an ImageFolder tree, `<root>/<class name>/<image>`, classes in sorted order
  (underscores in a class directory's name read as spaces).
A classification directory may hold `prompt.txt`, the prompt with `{}` where the class name goes.
Images are decoded once, at the model's image size, and kept as uint8.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from study.data.shards import IMAGE_EXTS, Part, read_index, read_part
from study.errors import UserError
from study.evaluation.bench.items import (
    LETTERS,
    BenchmarkFileError,
    Captioning,
    ChoiceItem,
    Classification,
    MultipleChoice,
    Task,
    answer_index,
    check_options,
    decode,
    nonempty,
    read_file,
)
from study.evaluation.bench.mmbench import plain_orders, read_mmbench


def load_task(path: str | Path, image_size: int, limit: int = 0) -> Task:
    """The task in `path` (its kind from the layout), its first `limit` rows (0: all), images decoded."""
    path = Path(path)
    if not path.exists():
        raise BenchmarkFileError(path, "no such file or directory")
    if path.is_dir():
        return (_shard_classes(path, image_size, limit) if (path / "index.json").is_file()
                else _image_folder(path, image_size, limit))
    readers = {".tsv": read_mmbench, ".jsonl": _choice_jsonl, ".json": _coco_captions}
    if path.suffix not in readers:
        raise BenchmarkFileError(path, "unknown layout: expected a .tsv (MMBench), .jsonl (multiple choice), "
                                       ".json (COCO captions) file or a classification directory")
    return readers[path.suffix](path, image_size, limit)


def _json_lines(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BenchmarkFileError(path, f"cannot read ({e.__class__.__name__})") from None
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise BenchmarkFileError(path, "empty line", number)
        try:
            record = json.loads(line)
        except ValueError:
            raise BenchmarkFileError(path, "not valid JSON", number) from None
        if not isinstance(record, dict):
            raise BenchmarkFileError(path, "not a JSON object", number)
        out.append(record)
    return out


def _choice_jsonl(path: Path, size: int, limit: int) -> MultipleChoice:
    items, images = [], []
    for number, r in enumerate(nonempty(path, _json_lines(path), limit), start=1):
        missing = [k for k in ("question", "options", "answer", "image") if k not in r]
        if missing:
            raise BenchmarkFileError(path, f"missing field(s) {', '.join(missing)}", number)
        options = r["options"]
        if not isinstance(options, list) or not all(isinstance(o, str) and o.strip() for o in options):
            raise BenchmarkFileError(path, "options must be a list of non-empty strings", number)
        if len(options) > len(LETTERS):
            raise BenchmarkFileError(path, f"{len(options)} options: at most {len(LETTERS)}", number)
        check_options(path, number, options)
        answer = answer_index(path, number, r["answer"], options)
        images.append(read_file(path, number, path.parent / str(r["image"]), size))
        options = [o.strip() for o in options]
        items.append(ChoiceItem(str(r.get("id", number)), str(r["question"]).strip(), str(r.get("hint", "")).strip(),
                                options, answer, plain_orders(options)))
    return MultipleChoice(path.stem, items, torch.stack(images))


def _coco_captions(path: Path, size: int, limit: int) -> Captioning:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries, annotations = data["images"], data["annotations"]
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BenchmarkFileError(path, f"cannot read as JSON ({e.__class__.__name__})") from None
    except (KeyError, TypeError):
        raise BenchmarkFileError(path, "a COCO captions file needs 'images' and 'annotations' lists") from None
    refs: dict[str, list[str]] = {}
    for number, a in enumerate(annotations, start=1):
        if not isinstance(a, dict) or "image_id" not in a or not str(a.get("caption", "")).strip():
            raise BenchmarkFileError(path, "needs 'image_id' and a non-empty 'caption'", f"annotations[{number}]")
        refs.setdefault(str(a["image_id"]), []).append(str(a["caption"]).strip())
    known = {str(e.get("id")) for e in entries if isinstance(e, dict)}
    stray = sorted(set(refs) - known)
    if stray:
        raise BenchmarkFileError(path, f"caption of image_id {stray[0]} that 'images' does not list", "annotations")
    ids, references, images = [], [], []
    for number, e in enumerate(nonempty(path, entries, limit), start=1):
        if not isinstance(e, dict) or "id" not in e or "file_name" not in e:
            raise BenchmarkFileError(path, "needs 'id' and 'file_name'", f"images[{number}]")
        if str(e["id"]) not in refs:
            raise BenchmarkFileError(path, f"image {e['id']} has no caption", f"images[{number}]")
        ids.append(str(e["id"]))
        references.append(refs[str(e["id"])])
        images.append(read_file(path, f"images[{number}]", path.parent / str(e["file_name"]), size))
    return Captioning(path.stem, ids, references, torch.stack(images))


def _prompt(root: Path) -> str | None:
    file = root / "prompt.txt"
    if not file.is_file():
        return None
    prompt = file.read_text(encoding="utf-8").strip()
    if prompt.count("{}") != 1:
        raise BenchmarkFileError(file, "the prompt must hold '{}' (where the class name goes) exactly once")
    return prompt


def _image_folder(root: Path, size: int, limit: int) -> Classification:
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise BenchmarkFileError(root, f"an ImageFolder tree needs at least 2 class directories, found {len(classes)}")
    files = []
    for label, directory in enumerate(classes):
        for file in sorted(directory.iterdir()):
            if file.suffix.lower().lstrip(".") not in IMAGE_EXTS:
                raise BenchmarkFileError(root, f"'{file.relative_to(root)}' is not an image "
                                               f"({', '.join(IMAGE_EXTS)})")
            files.append((file, label))
    files = nonempty(root, files, limit)
    images = [read_file(root, str(f.relative_to(root)), f, size) for f, _ in files]
    return Classification(root.name, [c.name.replace("_", " ") for c in classes],
                          torch.tensor([label for _, label in files]), torch.stack(images), _prompt(root))


def _shard_classes(root: Path, size: int, limit: int) -> Classification:
    names_file = root / "classes.txt"
    if not names_file.is_file():
        raise BenchmarkFileError(root, "labelled shards need classes.txt (one class name per line)")
    names = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        parts = read_index(str(root))
    except UserError as e:
        raise BenchmarkFileError(root / "index.json", str(e).split(": ", 1)[-1]) from None
    errors: list[dict] = []
    samples = [(p.path.name, key, s) for p in parts for key, s in read_part(Part(p.path, p.limit), errors)]
    if errors:
        raise BenchmarkFileError(root / errors[0]["shard"], errors[0]["reason"])
    images, labels = [], []
    for shard, key, sample in nonempty(root, samples, limit):
        row = f"{shard}:{key}"
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        if ext is None or "cls" not in sample:
            raise BenchmarkFileError(root, f"sample lacks {'an image' if ext is None else 'a cls field'}", row)
        try:
            label = int(sample["cls"].decode().strip())
        except (UnicodeDecodeError, ValueError):
            raise BenchmarkFileError(root, "cls is not an integer", row) from None
        if not 0 <= label < len(names):
            raise BenchmarkFileError(root, f"cls {label} has no name in classes.txt ({len(names)} classes)", row)
        images.append(decode(root, row, sample[ext], size))
        labels.append(label)
    return Classification(root.name, names, torch.tensor(labels), torch.stack(images), _prompt(root))
