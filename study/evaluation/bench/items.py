"""What a benchmark file becomes: its tasks (multiple choice, classification, captioning) and the checks every row
passes on the way (a malformed row is one error naming the file, the row and what is wrong)."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

import torch

from study.data.shards import CORRUPT, decode_image
from study.errors import UserError

LETTERS = string.ascii_uppercase[:5]


class BenchmarkFileError(UserError):
    """A benchmark file that cannot be read as its layout says: names the file, the row and what is wrong."""

    def __init__(self, path: Path | str, what: str, row: int | str | None = None):
        super().__init__(f"benchmark '{path}'{'' if row is None else f' row {row}'}: {what}")


@dataclass
class ChoiceItem:
    """A question, its options as the file's main row shows them, and the option orders it is asked in (indices into
    `options`, the first the main row's own): right only when right in every one (MMBench's CircularEval)."""

    id: str
    question: str
    hint: str
    options: list[str]
    answer: int
    orders: list[list[int]] = field(default_factory=list)  # empty: the main row's order only
    category: str = ""
    l2_category: str = ""

    def asked(self) -> list[list[int]]:
        return self.orders or [list(range(len(self.options)))]


@dataclass
class MultipleChoice:
    """A multiple-choice benchmark: its items and one image per item."""

    name: str
    items: list[ChoiceItem]
    images: torch.Tensor  # (N, 3, S, S) uint8, one per item


@dataclass
class Classification:
    """A classification benchmark: class names, labels, images and the prompt template."""

    name: str
    class_names: list[str]
    labels: torch.Tensor  # (N,)
    images: torch.Tensor
    prompt: str | None  # with '{}' for the class name; None: the backbone's default


@dataclass
class Captioning:
    """A captioning benchmark: image ids, reference captions and images."""

    name: str
    ids: list[str]
    references: list[list[str]]
    images: torch.Tensor


Task = MultipleChoice | Classification | Captioning


def decode(path: Path, row: int | str, data: bytes, size: int) -> torch.Tensor:
    """A benchmark image decoded to `size`, or a one-line error naming the file and row."""
    try:
        return decode_image(data, size)
    except CORRUPT as e:
        raise BenchmarkFileError(path, f"undecodable image ({e.__class__.__name__})", row) from None


def read_file(path: Path, row: int | str, image: Path, size: int) -> torch.Tensor:
    """The image file `image` of `path`'s row `row`, decoded."""
    try:
        data = image.read_bytes()
    except OSError as e:
        raise BenchmarkFileError(path, f"cannot read image '{image}' ({e.__class__.__name__})", row) from None
    return decode(path, row, data, size)


def nonempty(path: Path, rows: list, limit: int) -> list:
    """The file's rows, at most `limit` of them (0: all); an error when it has none."""
    if not rows:
        raise BenchmarkFileError(path, "holds no rows")
    return rows[:limit] if limit else rows


def answer_index(path: Path, row: int | str, answer: object, options: list[str]) -> int:
    """A question's answer as an option index, from an index or a letter A-E; an error naming the row otherwise."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        index = answer
    elif isinstance(answer, str) and answer.strip().upper() in LETTERS:
        index = LETTERS.index(answer.strip().upper())
    else:
        raise BenchmarkFileError(path, f"answer {answer!r} is neither an option index nor a letter A-E", row)
    if not 0 <= index < len(options):
        raise BenchmarkFileError(path, f"answer {answer!r} names no option (the row has {len(options)})", row)
    return index


def check_options(path: Path, row: int | str, options: list[str]) -> None:
    """Reject a question with fewer than two options, naming its file and row."""
    if len(options) < 2:
        raise BenchmarkFileError(path, f"{len(options)} option(s): a question needs at least 2", row)


