"""Captioning scores are COCO's: the toolkit's BLEU-4, METEOR, ROUGE-L and CIDEr-D equal what pycocoevalcap's own
`COCOEvalCap` computes from a COCO annotation file and a results file read by pycocotools, on captions whose
hyphens, punctuation and symbols a home-made tokenizer gets wrong."""

from __future__ import annotations

import json

import pytest

from study.errors import UserError
from study.evaluation.bench import coco_metrics
from study.evaluation.bench.coco_metrics import caption_metrics, coco_tokenize

REFERENCES = {
    1: ["A man in a T-shirt & jeans rides a bike.", "Someone cycling, wearing a t-shirt!",
        "A man (in jeans) on a bicycle -- outdoors."],
    2: ["Two dogs' toys: a ball and a stick.", "The dog's ball is red; the stick is brown.",
        "A 50% discount sign near two dogs"],
    3: ["A well-known café at 5:30 p.m.", "People sit outside a cafe... \"busy\" evening",
        "An x-ray of a hand?"],
    4: ["a red circle left of a blue square", "a blue square and a red circle", "red circle, blue square"],
}
HYPOTHESES = {1: "a man in a t-shirt riding a bike", 2: "a dog's red ball & a stick",
              3: "a well-known cafe at 5:30 p.m.!", 4: "a red circle, a blue square"}


class _NoSpice:
    """SPICE needs Stanford CoreNLP downloaded at run time; the toolkit does not report it."""

    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(gts)

    def method(self) -> str:
        return "SPICE"


@pytest.fixture(scope="module")
def coco_eval(tmp_path_factory):
    """`COCOEvalCap.evaluate()` on a COCO-format annotation file and results file, as the COCO toolkit runs it."""
    from pycocoevalcap import eval as coco_eval_module
    from pycocotools.coco import COCO

    root = tmp_path_factory.mktemp("coco")
    annotations = {"images": [{"id": i, "file_name": f"{i}.png"} for i in REFERENCES],
                   "annotations": [{"id": 10 * i + k, "image_id": i, "caption": c}
                                   for i, refs in REFERENCES.items() for k, c in enumerate(refs)],
                   "type": "captions", "info": {}, "licenses": []}
    (root / "annotations.json").write_text(json.dumps(annotations))
    (root / "results.json").write_text(json.dumps([{"image_id": i, "caption": c} for i, c in HYPOTHESES.items()]))
    coco = COCO(str(root / "annotations.json"))
    results = coco.loadRes(str(root / "results.json"))
    mp = pytest.MonkeyPatch()
    mp.setattr(coco_eval_module, "Spice", _NoSpice)
    try:
        evaluator = coco_eval_module.COCOEvalCap(coco, results)
        evaluator.params["image_id"] = results.getImgIds()
        evaluator.evaluate()
    finally:
        mp.undo()
    return evaluator.eval


@pytest.mark.slow
def test_scores_equal_coco_eval_cap(coco_eval):
    ids = sorted(REFERENCES)
    ours = caption_metrics([HYPOTHESES[i] for i in ids], [REFERENCES[i] for i in ids])
    theirs = {"bleu4": coco_eval["Bleu_4"], "meteor": coco_eval["METEOR"], "rouge_l": coco_eval["ROUGE_L"],
              "cider": coco_eval["CIDEr"]}
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    assert all(v > 0 for v in ours.values())  # every metric saw matches: a real comparison, not zeros


def test_tokenisation_is_ptb_as_coco_applies_it():
    # hyphenated words stay whole, symbols stay, sentence punctuation goes, everything is lower-cased
    assert coco_tokenize(["A man in a T-shirt & jeans, 50% off!", "", "The dog's ball..."]) == [
        "a man in a t-shirt & jeans 50 % off", "", "the dog 's ball"]


def test_a_machine_without_java_gets_one_line_naming_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="no 'java' on PATH"):
        coco_metrics.caption_metrics(["a cat"], [["a cat"]])
