"""COCO's caption metrics as the COCO caption evaluation computes them (pycocoevalcap, extra `bench`).

Hypotheses and references are tokenised by Stanford's PTB tokenizer as pycocoevalcap runs it (lower-cased,
its punctuation list removed: "t-shirt" stays one token, "&" and "%" stay), then scored by its BLEU-4, METEOR,
ROUGE-L and CIDEr-D scorers, so the numbers are the ones `COCOEvalCap.evaluate()` prints (SPICE, which needs
Stanford CoreNLP downloaded at run time, is left out). The tokenizer and METEOR are Java programs: a machine
without a Java runtime gets a one-line error naming it.

CIDEr-D weighs n-grams by their document frequency over the images scored, so a subset's CIDEr-D is not the
full set's restricted to that subset.
"""

from __future__ import annotations

import functools
import shutil
from typing import TYPE_CHECKING

from study.errors import UserError

if TYPE_CHECKING:
    from pycocoevalcap.meteor.meteor import Meteor

METRICS = ("bleu4", "meteor", "rouge_l", "cider")


def _require_java() -> None:
    if shutil.which("java") is None:
        raise UserError("captioning metrics run COCO's Java tokenizer and METEOR: no 'java' on PATH "
                        "(install a Java runtime, e.g. apt-get install default-jre-headless)")


def _scorers() -> tuple:
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError:
        raise UserError("captioning benchmarks need pycocoevalcap: pip install -e '.[bench]'") from None
    _require_java()
    return PTBTokenizer, Bleu, Rouge, Cider


@functools.cache
def _meteor() -> Meteor:
    """One METEOR process per Python process (it loads a 60 MB paraphrase table at start)."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def coco_tokenize(texts: list[str]) -> list[str]:
    """Each text as COCO's evaluation tokenises it (one Java call for all of them)."""
    tokenizer, *_ = _scorers()
    if not texts:
        return []
    # one caption per key, each on its own line; the tokenizer reads lines, so a newline inside a text is a space
    out = tokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    if len(out) != len(texts):
        raise UserError(f"COCO's PTB tokenizer returned {len(out)} lines for {len(texts)} captions")
    return [out[i][0] for i in range(len(texts))]


def caption_metrics(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU-4, METEOR, ROUGE-L and CIDEr-D of one hypothesis per image against its references."""
    _, bleu, rouge, cider = _scorers()
    tokens = coco_tokenize(hypotheses + [r for refs in references for r in refs])
    res = {i: [h] for i, h in enumerate(tokens[:len(hypotheses)])}
    gts, at = {}, len(hypotheses)
    for i, refs in enumerate(references):
        gts[i], at = tokens[at: at + len(refs)], at + len(refs)
    scores = {"bleu4": bleu(4).compute_score(gts, res, verbose=0)[0][3]}
    try:
        scores["meteor"] = _meteor().compute_score(gts, res)[0]
    except (ValueError, BrokenPipeError) as e:  # the Java process died: its stdout ends
        raise UserError(f"COCO's METEOR (Java) stopped: {e.__class__.__name__}; check 'java -version'") from None
    scores["rouge_l"] = rouge().compute_score(gts, res)[0]
    scores["cider"] = cider().compute_score(gts, res)[0]
    return {k: float(scores[k]) for k in METRICS}
