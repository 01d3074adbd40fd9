"""Benchmarks (`unihetero bench`, `eval.benchmarks`): files written from held-out world images, so the answers
are known; a trained miniature run beats chance and the trivial baselines on each, the records reach eval.jsonl
and the analysis, and every malformed file is one error naming the file and the row."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.runs import load_runs
from study.data.worlds import build_world
from study.evaluation.bench import world_tasks as bf
from study.evaluation.bench.mmbench import rotation
from study.evaluation.bench.multiple_choice import circular_accuracy, right_under
from study.runstore import RunStore
from study.train import train
from tests.bench_runs import WORLD, bench, train_bench_run
from tests.conftest import tiny_config
from unihetero.cli import main


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> dict[str, Path]:
    root, world = tmp_path_factory.mktemp("bench_tasks"), build_world(tiny_config(*WORLD).data)
    return {"mc": bf.write_tsv(root / "mc.tsv", bf.colour_questions(world, 64)),
            "mc_files": bf.write_jsonl(root / "files" / "mc_files.jsonl", bf.colour_questions(world, 24, seed=1)),
            "count": bf.write_count_folder(root / "count", world, 48),
            "count_shards": bf.write_count_shards(root / "count_shards", world, 48),
            "captions": bf.write_captions(root / "coco" / "captions.json", world, 16)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_bench_run(tmp_path_factory.mktemp("bench_run"))


@pytest.mark.slow
def test_a_trained_run_beats_chance_on_every_benchmark(trained, tasks, capsys):
    before = RunStore(trained).records("eval.jsonl")
    assert bench(trained, *(a for t in tasks.values() for a in ("--task", str(t)))) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["step"] == 1500
    for mc in ("mc", "mc_files"):
        m = {k.split("/")[-1]: v for k, v in out.items() if k.startswith(f"bench/{mc}/")}
        assert m["chance"] == 0.25 and m["acc"] > m["chance"] + 0.4, m
        # the miniature prompt does not show the options, so their order cannot matter
        assert m["acc_circular"] == m["acc"] and m["chance_circular"] == 0.25  # a guesser: all orders or none
    for count in ("count", "count_shards"):
        assert out[f"bench/{count}/n"] == 48 and out[f"bench/{count}/chance"] == 0.5
        assert out[f"bench/{count}/top1"] > out[f"bench/{count}/majority"] + 0.2
        assert out[f"bench/{count}/probe_train_n"] + out[f"bench/{count}/probe_test_n"] == 48
    assert out["bench/captions/cider"] > out["bench/captions/cider_constant"] + 1.0
    assert out["bench/captions/bleu4"] > out["bench/captions/bleu4_constant"]
    assert out["bench/captions/meteor"] > out["bench/captions/meteor_constant"]
    assert out["bench/captions/rouge_l"] > out["bench/captions/rouge_l_constant"]
    after = RunStore(trained).records("eval.jsonl")
    assert after[:-1] == before  # appended, nothing rewritten
    added = after[-1]
    assert added["reevaluated"] and added["final"] and added["zs_acc"] == before[-1]["zs_acc"]
    runs = load_runs(trained.parent).runs
    assert runs["bench/mc/acc"].to_list() == [out["bench/mc/acc"]]  # the analysis reads them as metrics


def test_benchmarks_run_at_every_evaluation_of_a_training_run(tasks, tmp_path, capsys):
    cfg = tiny_config(*WORLD, "train.samples_seen=320", "eval.every=10", "eval.bench_limit=8",
                      f"eval.benchmarks=[{tasks['mc']},{tasks['count']}]")
    run = train(cfg, tmp_path / "run", quiet=True)
    records = RunStore(run).records("eval.jsonl")
    assert [r["step"] for r in records] == [0, 10, 20]
    assert all(r["bench/mc/n"] == 8 and "bench/count/top1" in r for r in records)
    # --step 0 draws the run's initial weights again: the floor it recorded before training
    assert bench(run, "--task", str(tasks["mc"]), "--task", str(tasks["count"]), "--limit", "8", "--step", "0") == 0
    floor = json.loads(capsys.readouterr().out)
    assert floor["step"] == 0
    assert all(floor[k] == pytest.approx(records[0][k], abs=1e-6) for k in floor if k.startswith("bench/"))


def test_circular_accuracy_counts_a_question_only_when_every_rotation_is_right():
    # a model that prefers whatever option is shown first: right under the rotation that shows the answer first
    def first_shown(order):
        return torch.tensor([1.0] + [0.0] * (len(order) - 1))

    answers = [0, 2, 1]
    orders = [rotation(3, k) for k in range(3)]
    per_question = [[right_under(first_shown(order), order, a) for order in orders] for a in answers]
    assert per_question == [[True, False, False], [False, False, True], [False, True, False]]
    plain, circular = circular_accuracy(per_question)
    assert plain == pytest.approx(1 / 3) and circular == 0.0
    assert right_under(torch.tensor([1.0, 1.0, 0.0]), [0, 1, 2], 0) is False  # a tie is not right


def test_hf_runs_show_lettered_options_so_rotations_change_the_prompt(tiny_hf, tmp_path):
    from study.evaluation.bench.items import ChoiceItem
    from study.evaluation.bench.prompts import Prompts

    cfg = tiny_config("model.backbone=hf", f"model.vision_path={tiny_hf['dinov2']}",
                      f"model.llm_path={tiny_hf['qwen2']}", "data.source=shards", "data.shards=unused")
    prompts = Prompts(cfg)
    item = ChoiceItem("q", "what colour is it ?", "", ["red circle", "blue square", "green cross"], 1)
    contexts = [prompts.choice(item, order)[0] for order in [rotation(3, k) for k in range(3)]]
    assert len({tuple(c) for c in contexts}) == 3
    text = prompts.codec.text(contexts[0])
    assert "A. red circle" in text and text.endswith("Answer:")


@pytest.mark.slow
def test_hf_run_scores_every_kind_of_benchmark(tiny_hf, tasks, tmp_path, capsys):
    """The same scoring code on the transformers backbones: a 2-step hf run on shards written from the world."""
    shards = tmp_path / "shards"
    assert main(["data", "shards", str(shards), "--world", "96", "--config", "tiny", "--shard-size", "32"]) == 0
    capsys.readouterr()
    cfg = ["model.backbone=hf", f"model.vision_path={tiny_hf['dinov2']}", f"model.llm_path={tiny_hf['qwen2']}",
           "data.source=shards", f"data.shards={shards}", "data.unique_samples=64", "train.samples_seen=32",
           "train.batch_size=16", "train.warmup_steps=1", "eval.num_images=8"]
    run = train(tiny_config(*cfg), tmp_path / "hf_run", quiet=True)
    assert bench(run, "--task", str(tasks["mc"]), "--task", str(tasks["count"]), "--task", str(tasks["captions"]),
                  "--limit", "6") == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["bench/mc/n"] == 6 and out["bench/mc/acc_circular"] <= out["bench/mc/acc"]
    assert out["bench/count/n"] == 6 and out["bench/captions/n"] == 6
    assert out["bench/captions/cider"] >= 0
    assert all(0 <= out[f"bench/captions/{m}"] <= 1 for m in ("bleu4", "meteor", "rouge_l"))
    # a subset's CIDEr-D has the subset's document frequencies: the run says so
    assert "captions's CIDEr-D weighs n-grams by their document frequency (IDF) over the 6 images" in captured.err


def _png(tasks) -> bytes:
    return next((tasks["count"] / "one").iterdir()).read_bytes()


def _tsv(tmp_path: Path, header: str, *rows: str) -> Path:
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


HEADER = "index\tquestion\thint\tA\tB\tC\tD\tE\tanswer\timage"


def malformed(tmp_path: Path, tasks: dict[str, Path], case: str) -> tuple[Path, str]:
    """A malformed benchmark and a pattern its error must match (file, row and what is wrong)."""
    b64 = base64.b64encode(_png(tasks)).decode()
    good = f"0\tthere are one objects .\t\tred circle\tblue circle\t\t\t\tA\t{b64}"
    if case == "tsv_missing_column":
        return _tsv(tmp_path, HEADER.replace("\tanswer", ""), good.replace("\tA\t", "\t")), "missing column.*answer"
    if case == "tsv_answer_without_option":
        return _tsv(tmp_path, HEADER, good, good.replace("\tA\t", "\tD\t")), "row 2: answer 'D' names no option"
    if case == "tsv_undecodable_image":
        bad = base64.b64encode(b"not an image, but long enough not to read as a reference" * 2).decode()
        return _tsv(tmp_path, HEADER, good.replace(b64, bad)), "row 1: undecodable image"
    if case == "tsv_bad_base64":
        return _tsv(tmp_path, HEADER, good.replace(b64, "%" * 65)), "row 1: image is not valid base64"
    if case == "tsv_option_gap":
        return _tsv(tmp_path, HEADER, good.replace("blue circle\t\t", "\tblue circle\t")), "row 1: option B is empty"
    if case == "tsv_empty":
        return _tsv(tmp_path, HEADER), "holds no rows"
    if case == "jsonl_missing_field":
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps({"question": "q", "options": ["a", "b"], "image": "x.png"}) + "\n")
        return path, "row 1: missing field.*answer"
    if case == "jsonl_bad_json":
        path = tmp_path / "bad.jsonl"
        (tmp_path / "x.png").write_bytes(_png(tasks))
        line = json.dumps({"question": "there are one objects .", "options": ["red", "blue"], "answer": 0,
                           "image": "x.png"})
        path.write_text(line + "\n{oops\n")
        return path, "row 2: not valid JSON"
    if case == "jsonl_missing_image":
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps({"question": "q", "options": ["a", "b"], "answer": "B", "image": "gone.png"}) + "\n")
        return path, "row 1: cannot read image"
    if case == "coco_image_without_caption":
        path = tmp_path / "bad.json"
        (tmp_path / "x.png").write_bytes(_png(tasks))
        path.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.png"}, {"id": 2, "file_name": "x.png"}],
                                    "annotations": [{"image_id": 1, "caption": "there are one objects ."}]}))
        return path, r"row images\[2\]: image 2 has no caption"
    if case == "folder_not_an_image":
        root = tmp_path / "folder"
        for name in ("one", "two"):
            (root / name).mkdir(parents=True)
            (root / name / "a.png").write_bytes(_png(tasks))
        (root / "two" / "notes.txt").write_text("x")
        return root, "'two/notes.txt' is not an image"
    if case == "shards_unknown_class":
        root = bf.write_count_shards(tmp_path / "shards", build_world(tiny_config(*WORLD).data), 8)
        (root / "classes.txt").write_text("one\n")
        return root, "cls 1 has no name in classes.txt"
    if case == "words_outside_the_vocabulary":
        return _tsv(tmp_path, HEADER, good.replace("red circle", "crimson circle")), \
            "row 0: words outside the miniature vocabulary"
    raise AssertionError(case)


CASES = ["tsv_missing_column", "tsv_answer_without_option", "tsv_undecodable_image", "tsv_bad_base64",
         "tsv_option_gap", "tsv_empty", "jsonl_missing_field", "jsonl_bad_json", "jsonl_missing_image",
         "coco_image_without_caption", "folder_not_an_image", "shards_unknown_class", "words_outside_the_vocabulary"]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_malformed_benchmark_is_one_line_naming_file_and_row(trained, tasks, tmp_path, capsys, case):
    path, pattern = malformed(tmp_path, tasks, case)
    before = (trained / "eval.jsonl").read_bytes()
    assert bench(trained, "--task", str(path)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert str(path) in err, err
    assert re.search(pattern, err), err
    assert (trained / "eval.jsonl").read_bytes() == before  # nothing written


def test_a_malformed_benchmark_in_the_config_fails_before_training(tasks, tmp_path, capsys):
    path, _ = malformed(tmp_path, tasks, "tsv_answer_without_option")
    assert main(["train", "tiny", *WORLD, f"eval.benchmarks=[{path}]", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "row 2" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_bench_names_the_checkpoints_it_has(trained, tasks, capsys):
    assert bench(trained, "--task", str(tasks["mc"]), "--step", "7") == 2
    assert "no checkpoint at that step (kept: 1500)" in capsys.readouterr().err


@pytest.mark.slow
def test_two_ranks_under_torchrun_score_as_one(trained, tasks, tmp_path):
    """Each rank scores every second row; the gathered metrics equal one process's."""
    import os
    import subprocess
    import sys

    args = ["--task", str(tasks["mc"]), "--task", str(tasks["count"]), "--task", str(tasks["captions"])]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "unihetero.cli", "bench", str(trained), *args]
    done = subprocess.run(cmd, cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = RunStore(trained).records("eval.jsonl")[-1]
    assert main(["bench", str(trained), *args]) == 0
    one = RunStore(trained).records("eval.jsonl")[-1]
    bench = sorted(k for k in one if k.startswith("bench/"))
    assert bench and all(two[k] == pytest.approx(one[k], abs=1e-6) for k in bench)


def test_captions_are_greedy_decodings_of_at_most_the_trained_caption_length():
    """Captioning's decoding, without training: every image gets a caption of vocabulary words no longer than the
    longest caption the run trained on, and greedy decoding gives the same captions again."""
    from study.data.batch import make_batch
    from study.data.tokenizer import TOKEN_ID
    from study.evaluation.bench.captioning import generate_captions, max_new_tokens
    from study.evaluation.bench.prompts import Prompts
    from study.model.unified import UnifiedModel

    cfg = tiny_config(*WORLD)
    torch.manual_seed(0)
    model = UnifiedModel(cfg).eval()
    images = make_batch(build_world(cfg.data), np.arange(5)).images
    prompts = Prompts(cfg)
    captions = generate_captions(model, cfg, prompts, images)
    assert len(captions) == 5 and captions == generate_captions(model, cfg, prompts, images)
    vocabulary = set(TOKEN_ID)
    assert all(len(c.split()) <= max_new_tokens(cfg) and set(c.split()) <= vocabulary for c in captions)
