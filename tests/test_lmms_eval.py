"""lmms-eval, installed (lmms-eval 0.7 with --no-deps, `make install`), loads the toolkit's model as it loads outside
models, and the model answers requests built exactly as lmms-eval's task code builds them (`Instance` objects of
`lmms_eval/api/task.py`, `ConfigurableTask.construct_requests`), in the result types lmms-eval's own scoring reads."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lmms_eval.api.instance import Instance
from PIL import Image

from study.data.worlds import build_world
from study.evaluation.bench import world_tasks as bf
from study.evaluation.bench.lmms_plugin import UniheteroLMMS
from study.train import train
from tests.conftest import tiny_config

ROOT = Path(__file__).parents[1]
WORLD = ("data.world_version=2", "data.caption_coverage=1.0", "train.threads=1")
TASK, SPLIT = "unihetero_colours", "test"
FIND_MODEL = ("from lmms_eval.models import get_model, get_model_manifest; c = get_model('unihetero'); "
              "print(c.__module__, c.__name__, get_model_manifest('unihetero').simple_class_path)")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny run trained for 1,500 steps: it learns colour (about 20 s)."""
    cfg = tiny_config(*WORLD, "train.samples_seen=24000", "train.checkpoint_every=0")
    return train(cfg, tmp_path_factory.mktemp("lmms_run") / "run", quiet=True)


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    rows = bf.colour_questions(build_world(tiny_config(*WORLD).data), 24)
    return [{"image": base64.b64encode(png).decode(), "question": q, "options": o, "answer": a}
            for png, q, o, a in rows]


def doc_to_visual(doc: dict) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(doc["image"])))]


def _model(trained: Path, docs: list[dict], batch_size: int = 8) -> UniheteroLMMS:
    lmm = UniheteroLMMS.create_from_arg_string(f"run_dir={trained},batch_size={batch_size}")
    lmm.task_dict = {TASK: {SPLIT: docs}}  # as lmms-eval's evaluator sets it: task -> split -> documents
    return lmm


def _multiple_choice(doc_id: int, doc: dict, mutual_info: bool) -> list[Instance]:
    """The requests of one multiple-choice document, as `construct_requests` builds them (target_delimiter " ")."""
    meta = {"task": TASK, "doc_id": doc_id, "repeats": 1, "split": SPLIT}
    out = [Instance("loglikelihood", (doc["question"], f" {option}", doc_to_visual, doc_id, TASK, SPLIT), i, meta)
           for i, option in enumerate(doc["options"])]
    if mutual_info:  # the unconditional requests of acc_mutual_info: a 2-tuple, no image
        out += [Instance("loglikelihood", ("", f"{option}"), i, meta) for i, option in enumerate(doc["options"])]
    return out


def test_lmms_eval_finds_the_model_through_its_entry_point(tmp_path):
    """lmms-eval's registry reads installed metadata: run where the source tree's own metadata cannot shadow it, and
    reinstall the project first if the installed metadata predates the entry point."""
    found = subprocess.run([sys.executable, "-c", FIND_MODEL], cwd=tmp_path, capture_output=True, text=True)
    if found.returncode != 0 and "not found in available models" in found.stdout + found.stderr:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)], check=True)
        found = subprocess.run([sys.executable, "-c", FIND_MODEL], cwd=tmp_path, capture_output=True, text=True)
    assert found.returncode == 0, found.stdout[-2000:] + found.stderr[-2000:]
    assert found.stdout.split() == ["study.evaluation.bench.lmms_plugin", "UniheteroLMMS",
                                    "study.evaluation.bench.lmms_plugin.UniheteroLMMS"]


@pytest.mark.slow
def test_multiple_choice_requests_come_back_as_lmms_eval_scores_them(trained, docs):
    from lmms_eval.api.metrics import mean

    lmm = _model(trained, docs)
    forwards = []
    hook = lmm.model.register_forward_hook(lambda *_: forwards.append(1))
    requests = [r for i, doc in enumerate(docs) for r in _multiple_choice(i, doc, mutual_info=True)]
    results = lmm.loglikelihood(requests)
    hook.remove()
    assert all(isinstance(ll, float) and isinstance(greedy, bool) and ll < 0 for ll, greedy in results)
    with_image = sum(len(r.args) == 6 for r in requests)
    assert len(forwards) == math.ceil(with_image / 8) + math.ceil((len(requests) - with_image) / 8)  # batched
    per_doc = 2 * len(docs[0]["options"])
    right = [int(np.argmax([ll for ll, _ in results[k * per_doc: k * per_doc + per_doc // 2]]) == doc["answer"])
             for k, doc in enumerate(docs)]
    assert mean(right) > 0.25 + 0.4  # chance is 1/4
    one_by_one = _model(trained, docs, batch_size=1).loglikelihood(requests)
    assert [g for _, g in one_by_one] == [g for _, g in results]
    np.testing.assert_allclose([ll for ll, _ in one_by_one], [ll for ll, _ in results], atol=1e-4)


@pytest.mark.slow
def test_generation_clamps_max_new_tokens_and_cuts_at_until(trained, docs):
    lmm = _model(trained, docs)
    meta = {"task": TASK, "doc_id": 0, "repeats": 1, "split": SPLIT}
    asked = [Instance("generate_until", ("", {"until": ["."], "max_new_tokens": 10_000}, doc_to_visual, i, TASK,
                                         SPLIT), 0, {**meta, "doc_id": i}) for i in range(3)]
    with pytest.warns(UserWarning, match="max_new_tokens=10000 does not fit"):
        texts = lmm.generate_until(asked)
    assert all(isinstance(t, str) and t.startswith("there are") and "." not in t for t in texts)
    (full,) = lmm.generate_until([Instance("generate_until", ("", {}, doc_to_visual, 0, TASK, SPLIT), 0, meta)])
    (ll, greedy), (_, other) = lmm.loglikelihood([
        Instance("loglikelihood", ("", full, doc_to_visual, 0, TASK, SPLIT), 0, meta),
        Instance("loglikelihood", ("", lambda doc: "there are nine objects", doc_to_visual, 0, TASK, SPLIT), 0, meta)])
    assert greedy and not other and ll < 0


@pytest.mark.slow
def test_simple_evaluate_runs_a_task_on_the_model_instance(trained, docs, tmp_path):
    """lmms-eval's own pipeline (a task YAML on an include path, its dataset loader, request building, scoring) on the
    model instance: a generation task, its exact match equal to the model's own answers scored by hand. (lmms-eval
    0.7's evaluator turns loglikelihood results into strings before scoring, which breaks its multiple-choice
    tasks for every model; those are tested above against the request layout.)"""
    data = tmp_path / "captions.jsonl"
    world = build_world(tiny_config(*WORLD).data)
    rows = [(png, " ".join(scene.caption)) for png, scene in bf.world_images(world, 6)]
    data.write_text("".join(json.dumps({"image": base64.b64encode(png).decode(), "caption": c}) + "\n"
                            for png, c in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").write_text("import base64, io\nfrom PIL import Image\n\ndef doc_to_visual(doc):\n"
                                    "    return [Image.open(io.BytesIO(base64.b64decode(doc['image'])))]\n")
    (tasks / "captions.yaml").write_text(
        f"task: unihetero_captions\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: generate_until\ndoc_to_visual: !function utils.doc_to_visual\n"
        "doc_to_text: ''\ndoc_to_target: caption\ngeneration_kwargs:\n  until: ['.']\n  max_new_tokens: 64\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n")
    script = (
        "import json, sys\nfrom lmms_eval.evaluator import simple_evaluate\nfrom lmms_eval.tasks import TaskManager\n"
        "from study.evaluation.bench.lmms_plugin import UniheteroLMMS\n"
        f"lmm = UniheteroLMMS(run_dir={str(trained)!r})\n"
        f"out = simple_evaluate(model=lmm, tasks=['unihetero_captions'], task_manager=TaskManager("
        f"include_path={str(tasks)!r}), log_samples=True, bootstrap_iters=0)\n"
        "print(json.dumps({'em': out['results']['unihetero_captions']['exact_match,none'], "
        "'answers': [s['resps'][0][0] for s in out['samples']['unihetero_captions']]}))\n")
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    lmm = UniheteroLMMS(run_dir=str(trained))
    lmm.task_dict = {"c": {"test": [{"image": base64.b64encode(png).decode()} for png, _ in rows]}}
    mine = lmm.generate_until([Instance("generate_until", ("", {"until": ["."], "max_new_tokens": 64}, doc_to_visual,
                                                           i, "c", "test"), 0, {"task": "c", "doc_id": i,
                                                                                "repeats": 1}) for i in range(6)])
    assert out["answers"] == mine
    assert out["em"] == pytest.approx(np.mean([a.strip() == c.strip().rstrip(".") for a, (_, c) in
                                               zip(mine, rows, strict=True)]))


def test_scores_do_not_depend_on_the_batch_and_a_generation_is_greedy_under_its_own_likelihood(docs, tmp_path):
    """Properties of any weights (a run of 2 steps): a request's loglikelihood is the same in a batch of 8 as alone,
    and the text `generate_until` writes is what loglikelihood calls the greedy continuation."""
    run = train(tiny_config(*WORLD, "train.samples_seen=32", "train.warmup_steps=1", "train.checkpoint_every=0",
                            "eval.inference_scaling=false"), tmp_path / "run", quiet=True)
    meta = {"task": TASK, "doc_id": 0, "repeats": 1, "split": SPLIT}
    requests = [r for i in range(3) for r in _multiple_choice(i, docs[i], mutual_info=True)]
    batched = _model(run, docs, batch_size=8).loglikelihood(requests)
    alone = _model(run, docs, batch_size=1).loglikelihood(requests)
    assert [ll for ll, _ in batched] == pytest.approx([ll for ll, _ in alone], abs=1e-4)
    assert [g for _, g in batched] == [g for _, g in alone]
    lmm = _model(run, docs)
    (text,) = lmm.generate_until([Instance("generate_until", ("", {"max_new_tokens": 5}, doc_to_visual, 0, TASK,
                                                                   SPLIT), 0, meta)])
    (ll, greedy), = lmm.loglikelihood([Instance("loglikelihood", ("", text, doc_to_visual, 0, TASK, SPLIT), 0, meta)])
    assert text.strip() and greedy and ll < 0
