"""Benchmark files read into tasks, every row checked: a malformed file is one error naming the file, the row and
what is wrong; no row is ever skipped.

Layouts (the kind follows from the path):
- `*.tsv`: multiple choice in MMBench's layout: columns `index`, `question`, optional `hint`, options `A`..`E`
  (absent ones empty), `answer` (a letter), `image` (base64).
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

import base64
import binascii
import csv
import json
import string
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from study.data.shards import CORRUPT, IMAGE_EXTS, Part, decode_image, read_index, read_part
from study.errors import UserError

LETTERS = string.ascii_uppercase[:5]


class BenchmarkFileError(UserError):
    """A benchmark file that cannot be read as its layout says: names the file, the row and what is wrong."""

    def __init__(self, path: Path | str, what: str, row: int | str | None = None):
        super().__init__(f"benchmark '{path}'{'' if row is None else f' row {row}'}: {what}")


@dataclass
class ChoiceItem:
    id: str
    question: str
    hint: str
    options: list[str]
    answer: int


@dataclass
class MultipleChoice:
    name: str
    items: list[ChoiceItem]
    images: torch.Tensor  # (N, 3, S, S) uint8, one per item


@dataclass
class Classification:
    name: str
    class_names: list[str]
    labels: torch.Tensor  # (N,)
    images: torch.Tensor
    prompt: str | None  # with '{}' for the class name; None: the backbone's default


@dataclass
class Captioning:
    name: str
    ids: list[str]
    references: list[list[str]]
    images: torch.Tensor


Task = MultipleChoice | Classification | Captioning


def load_task(path: str | Path, image_size: int, limit: int = 0) -> Task:
    """The task in `path` (its kind from the layout), its first `limit` rows (0: all), images decoded."""
    path = Path(path)
    if not path.exists():
        raise BenchmarkFileError(path, "no such file or directory")
    if path.is_dir():
        return (_shard_classes(path, image_size, limit) if (path / "index.json").is_file()
                else _image_folder(path, image_size, limit))
    readers = {".tsv": _mmbench_tsv, ".jsonl": _choice_jsonl, ".json": _coco_captions}
    if path.suffix not in readers:
        raise BenchmarkFileError(path, "unknown layout: expected a .tsv (MMBench), .jsonl (multiple choice), "
                                       ".json (COCO captions) file or a classification directory")
    return readers[path.suffix](path, image_size, limit)


def _decode(path: Path, row: int | str, data: bytes, size: int) -> torch.Tensor:
    try:
        return decode_image(data, size)
    except CORRUPT as e:
        raise BenchmarkFileError(path, f"undecodable image ({e.__class__.__name__})", row) from None


def _read_file(path: Path, row: int | str, image: Path, size: int) -> torch.Tensor:
    """The image file `image` of `path`'s row `row`, decoded."""
    try:
        data = image.read_bytes()
    except OSError as e:
        raise BenchmarkFileError(path, f"cannot read image '{image}' ({e.__class__.__name__})", row) from None
    return _decode(path, row, data, size)


def _nonempty(path: Path, rows: list, limit: int) -> list:
    if not rows:
        raise BenchmarkFileError(path, "holds no rows")
    return rows[:limit] if limit else rows


def _answer_index(path: Path, row: int | str, answer: object, options: list[str]) -> int:
    if isinstance(answer, int) and not isinstance(answer, bool):
        index = answer
    elif isinstance(answer, str) and answer.strip().upper() in LETTERS:
        index = LETTERS.index(answer.strip().upper())
    else:
        raise BenchmarkFileError(path, f"answer {answer!r} is neither an option index nor a letter A-E", row)
    if not 0 <= index < len(options):
        raise BenchmarkFileError(path, f"answer {answer!r} names no option (the row has {len(options)})", row)
    return index


def _check_options(path: Path, row: int | str, options: list[str]) -> None:
    if len(options) < 2:
        raise BenchmarkFileError(path, f"{len(options)} option(s): a question needs at least 2", row)


def _mmbench_tsv(path: Path, size: int, limit: int) -> MultipleChoice:
    csv.field_size_limit(sys.maxsize)  # base64 images are long fields
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BenchmarkFileError(path, f"cannot read as TSV ({e.__class__.__name__})") from None
    missing = [c for c in ("index", "question", "A", "B", "answer", "image") if c not in header]
    if rows and missing:
        raise BenchmarkFileError(path, f"missing column(s) {', '.join(missing)} (MMBench layout: index, question, "
                                       "hint, A..E, answer, image)")
    items, images = [], []
    for number, row in enumerate(_nonempty(path, rows, limit), start=1):
        if None in row or any(row[c] is None for c in header):
            raise BenchmarkFileError(path, "wrong number of fields", number)
        present = [(letter, (row.get(letter) or "").strip()) for letter in LETTERS]
        last = max((i for i, (_, text) in enumerate(present) if text), default=-1)
        gaps = [letter for letter, text in present[: last + 1] if not text]
        if gaps:
            raise BenchmarkFileError(path, f"option {gaps[0]} is empty but a later option is not", number)
        options = [text for _, text in present[: last + 1]]
        _check_options(path, number, options)
        answer = _answer_index(path, number, row["answer"], options)
        try:
            data = base64.b64decode(row["image"], validate=True)
        except (binascii.Error, ValueError):
            raise BenchmarkFileError(path, "image is not valid base64", number) from None
        images.append(_decode(path, number, data, size))
        items.append(ChoiceItem(row["index"], row["question"].strip(), (row.get("hint") or "").strip(), options,
                                answer))
    return MultipleChoice(path.stem, items, torch.stack(images))


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
    for number, r in enumerate(_nonempty(path, _json_lines(path), limit), start=1):
        missing = [k for k in ("question", "options", "answer", "image") if k not in r]
        if missing:
            raise BenchmarkFileError(path, f"missing field(s) {', '.join(missing)}", number)
        options = r["options"]
        if not isinstance(options, list) or not all(isinstance(o, str) and o.strip() for o in options):
            raise BenchmarkFileError(path, "options must be a list of non-empty strings", number)
        if len(options) > len(LETTERS):
            raise BenchmarkFileError(path, f"{len(options)} options: at most {len(LETTERS)}", number)
        _check_options(path, number, options)
        answer = _answer_index(path, number, r["answer"], options)
        images.append(_read_file(path, number, path.parent / str(r["image"]), size))
        items.append(ChoiceItem(str(r.get("id", number)), str(r["question"]).strip(), str(r.get("hint", "")).strip(),
                                [o.strip() for o in options], answer))
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
    for number, e in enumerate(_nonempty(path, entries, limit), start=1):
        if not isinstance(e, dict) or "id" not in e or "file_name" not in e:
            raise BenchmarkFileError(path, "needs 'id' and 'file_name'", f"images[{number}]")
        if str(e["id"]) not in refs:
            raise BenchmarkFileError(path, f"image {e['id']} has no caption", f"images[{number}]")
        ids.append(str(e["id"]))
        references.append(refs[str(e["id"])])
        images.append(_read_file(path, f"images[{number}]", path.parent / str(e["file_name"]), size))
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
    files = _nonempty(root, files, limit)
    images = [_read_file(root, str(f.relative_to(root)), f, size) for f, _ in files]
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
    for shard, key, sample in _nonempty(root, samples, limit):
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
        images.append(_decode(root, row, sample[ext], size))
        labels.append(label)
    return Classification(root.name, names, torch.tensor(labels), torch.stack(images), _prompt(root))
