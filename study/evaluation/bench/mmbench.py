"""MMBench's TSV files as they are published, plain or circular (VLMEvalKit: `vlmeval/tools.py` builds the circular
files, `vlmeval/dataset/image_base.py` resolves image references, `vlmeval/dataset/utils/multiple_choice.py` scores).

Columns: `index`, `question`, optional `hint`, options `A`..`E` (absent ones empty), `answer` (a letter), `image`
(base64, or a reference: a cell of 64 characters or fewer holds the index of the row whose image it shares), and
optional `category`, `l2-category`, `g_index`.

A circular file (a `g_index` column, or any index of 1,000,000 or more) already holds each question's rotations: the
copy rotated k times has index `index + k * 1_000_000`, its options shifted by one place per rotation and its answer
letter moved with them, and its image a reference to the main row. Rows are grouped by `g_index` (default `index %
1_000_000`); a question is right only when every row of its group is answered right. Rows VLMEvalKit leaves
unrotated ("abnormal": an option that is itself a run of capital letters, or whose words name two or more of the
row's choice letters) are groups of one. A plain file is rotated here, the same way, abnormal rows excepted; a
circular file is never rotated again.
"""

from __future__ import annotations

import base64
import binascii
import csv
import re
import string
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from study.evaluation.bench.items import (
    LETTERS,
    BenchmarkFileError,
    ChoiceItem,
    MultipleChoice,
    answer_index,
    check_options,
    decode,
    nonempty,
)

OFFSET = 1_000_000  # VLMEvalKit's offset between a question's rotated copies
REFERENCE_MAX = 64  # an image cell this short is another row's index (VLMEvalKit's rule)
REQUIRED = ("index", "question", "A", "B", "answer", "image")


@dataclass
class Row:
    """One row of an MMBench TSV file, as published."""

    number: int  # 1-based row of the file (the header not counted)
    index: str
    question: str
    hint: str
    options: list[str]
    answer: int
    image: str  # base64, or the index of the row whose image this row shares
    category: str
    l2_category: str
    g_index: str


def rotation(n: int, k: int) -> list[int]:
    """The option order of the copy rotated k times (indices into the main row's options): VLMEvalKit moves option j
    of the main row to place (j - k) mod n."""
    return [(p + k) % n for p in range(n)]


def abnormal(options: list[str]) -> bool:
    """VLMEvalKit's rows left unrotated: an option that is a run of capital letters ("A", "BC"), or an option whose
    words (letters and spaces kept) name two or more of the row's choice letters."""
    letters = set(LETTERS[: len(options)])
    for text in options:
        words = re.sub(r"[^A-Za-z ]", " ", text).split()
        if len({w for w in words if w in letters}) > 1 or (text and text in string.ascii_uppercase):
            return True
    return False


def plain_orders(options: list[str]) -> list[list[int]]:
    """The orders a question of a plain file is asked in: every rotation, or its own order alone when abnormal."""
    n = len(options)
    return [list(range(n))] if abnormal(options) else [rotation(n, k) for k in range(n)]


def _read(path: Path) -> tuple[list[dict], list[str]]:
    csv.field_size_limit(sys.maxsize)  # base64 images are long fields
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BenchmarkFileError(path, f"cannot read as TSV ({e.__class__.__name__})") from None
    header = list(rows[0].keys()) if rows else []
    missing = [c for c in REQUIRED if c not in header]
    if rows and missing:
        raise BenchmarkFileError(path, f"missing column(s) {', '.join(missing)} (MMBench layout: index, question, "
                                       "hint, A..E, answer, image)")
    return rows, header


def _row(path: Path, number: int, row: dict, header: list[str], circular: bool) -> Row:
    if None in row or any(row[c] is None for c in header):
        raise BenchmarkFileError(path, "wrong number of fields", number)
    present = [(letter, (row.get(letter) or "").strip()) for letter in LETTERS]
    last = max((i for i, (_, text) in enumerate(present) if text), default=-1)
    gaps = [letter for letter, text in present[: last + 1] if not text]
    if gaps:
        raise BenchmarkFileError(path, f"option {gaps[0]} is empty but a later option is not", number)
    options = [text for _, text in present[: last + 1]]
    check_options(path, number, options)
    index = row["index"].strip()
    g_index = (row.get("g_index") or "").strip()
    if circular and not g_index:
        if not index.isdigit():
            raise BenchmarkFileError(path, f"index {index!r} is not an integer (a circular file groups rows by "
                                           "index % 1,000,000)", number)
        g_index = str(int(index) % OFFSET)
    return Row(number, index, row["question"].strip(), (row.get("hint") or "").strip(), options,
               answer_index(path, number, row["answer"], options), row["image"].strip(),
               (row.get("category") or "").strip(), (row.get("l2-category") or "").strip(), g_index or index)


def _image_cell(path: Path, row: Row, by_index: dict[str, Row]) -> str:
    """The row's base64 image: its own, or that of the row its reference names (every row is checked, copies too)."""
    cell = row.image
    if not cell:
        raise BenchmarkFileError(path, "no image", row.number)
    if len(cell) > REFERENCE_MAX:
        return cell
    target = by_index.get(cell)
    if target is None or len(target.image) <= REFERENCE_MAX:
        raise BenchmarkFileError(path, f"image refers to index {cell}, which holds no image of its own", row.number)
    return target.image


def _image(path: Path, row: Row, by_index: dict[str, Row], size: int) -> torch.Tensor:
    cell = _image_cell(path, row, by_index)
    try:
        data = base64.b64decode(cell, validate=True)
    except (binascii.Error, ValueError):
        raise BenchmarkFileError(path, "image is not valid base64", row.number) from None
    return decode(path, row.number, data, size)


def _copy_order(path: Path, main: Row, copy: Row) -> list[int]:
    """The order of the main row's options that `copy` shows, checked: a rotation, its answer moved with it."""
    n = len(main.options)
    for k in range(1, n):
        order = rotation(n, k)
        if len(copy.options) == n and [main.options[j] for j in order] == copy.options:
            if order[copy.answer] != main.answer:
                raise BenchmarkFileError(path, f"answer {LETTERS[copy.answer]} of a rotated copy of index "
                                               f"{main.index} does not follow its options", copy.number)
            return order
    raise BenchmarkFileError(path, f"options are not a rotation of those of index {main.index} (its group "
                                   f"{copy.g_index})", copy.number)


def _questions(path: Path, rows: list[Row], circular: bool) -> list[tuple[Row, list[list[int]]]]:
    """(main row, the option orders its question is asked in) per question, in the file's order."""
    if not circular:
        return [(r, plain_orders(r.options)) for r in rows]
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.g_index, []).append(r)
    out = []
    for g, members in groups.items():
        mains = [r for r in members if r.index == g]
        if len(mains) != 1:
            raise BenchmarkFileError(path, f"group {g} has {len(mains)} main rows (index {g}): a circular file "
                                           "needs exactly one", members[0].number)
        main = mains[0]
        copies = sorted((r for r in members if r is not main), key=lambda r: int(r.index))
        out.append((main, [list(range(len(main.options)))] + [_copy_order(path, main, c) for c in copies]))
    return out


def read_mmbench(path: Path, size: int, limit: int) -> MultipleChoice:
    """The questions of an MMBench TSV (its first `limit` questions, 0: all), images decoded once per question."""
    raw, header = _read(path)
    raw = nonempty(path, raw, 0)
    circular = "g_index" in header or any((r.get("index") or "").strip().isdigit() and int(r["index"]) >= OFFSET
                                          for r in raw)
    rows = [_row(path, number, r, header, circular) for number, r in enumerate(raw, start=1)]
    by_index = {r.index: r for r in rows}
    for r in rows:
        _image_cell(path, r, by_index)
    questions = _questions(path, rows, circular)
    questions = questions[:limit] if limit else questions
    items = [ChoiceItem(main.index, main.question, main.hint, main.options, main.answer, orders, main.category,
                        main.l2_category) for main, orders in questions]
    images = torch.stack([_image(path, main, by_index, size) for main, _ in questions])
    return MultipleChoice(path.stem, items, images)
