"""MMBench's files as VLMEvalKit publishes them: a circular TSV (each question's rotated copies as rows with index
`index + k * 1_000_000`, options shifted one place per rotation, the answer letter moved with them, the image a
reference to the main row, "abnormal" rows left unrotated), laid out here as `vlmeval/tools.py` (`CIRCULAR`) writes
it, read and scored as `vlmeval/dataset/utils/multiple_choice.py` groups it."""

from __future__ import annotations

import base64
import json
from collections import deque
from pathlib import Path

import pytest

from study.data.worlds import build_world
from study.evaluation.bench import world_tasks as bf
from study.evaluation.bench.items import BenchmarkFileError
from study.evaluation.bench.mmbench import abnormal, read_mmbench, rotation
from tests.bench_runs import WORLD, bench, train_bench_run
from tests.conftest import tiny_config

OFFSET = 1_000_000
COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "image", "category", "l2-category"]


def _plain(rows, categories=("colour", "shade")) -> list[dict]:
    """MMBench's plain layout: one row per question, letters A.. for options."""
    out = []
    for i, (png, question, options, answer) in enumerate(rows):
        cells = dict(zip("ABCD", options, strict=False))
        out.append({"index": i, "question": question, "hint": "", **cells, "answer": "ABCD"[answer],
                    "image": base64.b64encode(png).decode(), "category": categories[i % len(categories)],
                    "l2-category": "perception"})
    return out


def _circular(plain: list[dict], inline_images: bool = False) -> list[dict]:
    """The circular file VLMEvalKit's `CIRCULAR` writes from `plain`: abnormal rows once (g_index = index), then per
    option count the main rows, then the copies rotated once, twice, ... (`deque.rotate(1)` of the labels each
    time, option s moved to letter c_map[s], the answer with it, `image` the main row's index)."""
    abnormal_rows = [dict(r, g_index=r["index"]) for r in plain if abnormal([r[c] for c in "ABCD" if c in r])]
    normal = [r for r in plain if not abnormal([r[c] for c in "ABCD" if c in r])]
    labels = list("ABCD")
    rotates, dq = [labels], deque(labels)
    for _ in range(len(labels) - 1):
        dq.rotate(1)
        rotates.append(list(dq))
    out = list(abnormal_rows)
    for i, rot in enumerate(rotates):
        c_map = dict(zip(rotates[0], rot, strict=True))
        for r in normal:
            if i == 0:
                out.append(dict(r, g_index=r["index"]))
                continue
            copy = dict(r, index=r["index"] + OFFSET * i, g_index=r["index"], answer=c_map[r["answer"]])
            copy["image"] = r["image"] if inline_images else r["index"]
            for s, t in c_map.items():
                copy[t] = r[s]
            out.append(copy)
    return out


def _write(path: Path, rows: list[dict], columns: list[str] = COLUMNS) -> Path:
    lines = ["\t".join(columns)] + ["\t".join(str(r.get(c, "")) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def questions():
    return bf.colour_questions(build_world(tiny_config(*WORLD).data), 12)


def test_vlmevalkits_abnormal_rows():
    assert abnormal(["red", "B", "green", "blue"])  # an option that is a choice letter
    assert abnormal(["both A and B", "neither", "x", "y"])  # an option naming two choice letters
    assert abnormal(["ABC", "x"])  # a run of capitals, as `choices[k] in string.ascii_uppercase` tests it
    assert not abnormal(["plan A", "plan B", "a cat", "AB-testing"])  # one letter per option is fine
    assert all(rotation(4, k) == [(p + k) % 4 for p in range(4)] for k in range(4))


@pytest.mark.parametrize("inline_images", [False, True])
def test_a_circular_file_is_one_question_per_group_never_rotated_again(questions, tmp_path, inline_images):
    plain = _plain(questions)
    plain[3] |= {"A": "A", "answer": "A"}  # abnormal: VLMEvalKit leaves it unrotated
    rows = _circular(plain, inline_images)
    assert len(rows) == 11 * 4 + 1
    task = read_mmbench(_write(tmp_path / "c.tsv", rows, COLUMNS + ["g_index"]), 32, 0)
    assert [item.id for item in task.items] == ["3", *[str(i) for i in range(12) if i != 3]]  # the file's order
    assert len(task.items) == 12 and len(task.images) == 12
    for item in task.items:
        source = plain[int(item.id)]
        assert item.options == [source[c] for c in "ABCD"] and "ABCD"[item.answer] == source["answer"]
        assert item.asked() == ([[0, 1, 2, 3]] if item.id == "3" else [rotation(4, k) for k in range(4)])
        # each order is the copy's options as the file shows them, its answer letter where the true option went
        for k, order in enumerate(item.asked()):
            copy = next(r for r in rows if r["index"] == int(item.id) + OFFSET * k)
            assert [item.options[j] for j in order] == [copy[c] for c in "ABCD"]
            assert order.index(item.answer) == "ABCD".index(copy["answer"])
    # without a g_index column, rows group by index % 1,000,000, as VLMEvalKit's scorer does
    again = read_mmbench(_write(tmp_path / "c2.tsv", rows), 32, 5)
    assert [i.asked() for i in again.items] == [i.asked() for i in task.items[:5]]  # the limit counts questions


def test_a_plain_file_is_rotated_here_except_abnormal_rows(questions, tmp_path):
    plain = _plain(questions)
    plain[0] |= {"B": "A and C", "answer": "A"}
    task = read_mmbench(_write(tmp_path / "p.tsv", plain), 32, 0)
    assert len(task.items) == 12
    assert task.items[0].asked() == [[0, 1, 2, 3]]
    assert all(item.asked() == [rotation(4, k) for k in range(4)] for item in task.items[1:])


@pytest.mark.parametrize(("edit", "message"), [
    (lambda rows: rows[14].__setitem__("image", 77), r"row 15: image refers to index 77, which holds no image"),
    (lambda rows: rows[14].__setitem__("answer", next(c for c in "ABCD" if c != rows[14]["answer"])),
     r"row 15: answer [A-D] of a rotated copy of index 2 does not follow its options"),
    (lambda rows: rows[14].__setitem__("A", "violet"), r"row 15: options are not a rotation of those of index 2"),
    (lambda rows: (rows.pop(2), [r.update(image=rows[0]["image"]) for r in rows if r["g_index"] == 2]),
     r"group 2 has 0 main rows"),
])
def test_a_malformed_circular_file_is_one_error_naming_the_row(questions, tmp_path, edit, message):
    rows = _circular(_plain(questions))
    assert rows[14]["index"] == OFFSET + 2
    edit(rows)
    with pytest.raises(BenchmarkFileError, match=message):
        read_mmbench(_write(tmp_path / "bad.tsv", rows, COLUMNS + ["g_index"]), 32, 0)


@pytest.mark.slow
def test_the_circular_file_scores_as_its_plain_file_per_category_with_the_chance_the_prompt_allows(
        tmp_path_factory, questions, tmp_path, capsys):
    plain = _write(tmp_path / "mmb_plain.tsv", _plain(questions))
    circular = _write(tmp_path / "mmb_circular.tsv", _circular(_plain(questions)), COLUMNS + ["g_index"])
    trained = train_bench_run(tmp_path_factory.mktemp("bench_run"))
    assert bench(trained, "--task", str(plain), "--task", str(circular)) == 0
    out = json.loads(capsys.readouterr().out)
    a, b = ({k.split("/", 2)[2]: v for k, v in out.items() if k.startswith(f"bench/{name}/")}
            for name in ("mmb_plain", "mmb_circular"))
    assert a == b  # the same questions asked in the same orders
    assert b["n"] == 12 and b["acc"] > b["chance"] + 0.4
    assert b["chance_circular"] == b["chance"] == 0.25  # the miniature prompt does not show the options
    assert set(b) >= {"category/colour/acc", "category/shade/acc_circular", "l2-category/perception/acc"}
    assert b["l2-category/perception/acc"] == b["acc"]
