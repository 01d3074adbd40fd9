"""Zero-shot attribute accuracy by likelihood scoring of captions that differ in one attribute.

For every object of every held-out image, and each attribute (size, colour, shape, location), the
model scores the full description of the object with each possible value of that attribute; it is
right when the true description scores strictly highest. Objects in an image have distinct cells and
distinct (shape, colour) pairs, so every alternative is false. Count is asked once per image.
Descriptions follow the image's true count sentence, as in training captions; only the description's
own tokens are scored, so the shared context favours no candidate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from study.config import RunConfig
from study.data.tokenizer import encode
from study.data.world import COLOURS, LOCATIONS, SHAPES, SIZES, Obj, Scene, count_words
from study.evaluation.likelihood import CHUNK, sequence_scores
from study.evaluation.ranks import ONE, Split
from study.masking import random_mask
from study.model.unified import UnifiedModel

ATTRIBUTES = {"size": SIZES, "colour": COLOURS, "shape": SHAPES, "location": LOCATIONS}
_FIELD = {"size": "size", "colour": "colour", "shape": "shape", "location": "cell"}


@dataclass
class Questions:
    """The zero-shot candidates: which image and question each is, whether it is correct, and its tokens."""

    image: np.ndarray      # (C,) which image each candidate is about
    question: np.ndarray   # (C,) question id
    correct: np.ndarray    # (C,) bool
    tokens: list[list[int]]
    score_from: np.ndarray  # (C,) first token position that is scored
    attribute: list[str]   # per question


def build_questions(scenes: list[Scene], min_objects: int, max_objects: int) -> Questions:
    """The true and false statements about each scene's attributes that zero-shot accuracy scores."""
    image, question, correct, tokens, score_from, attribute = [], [], [], [], [], []

    def add(img: int, context: list[str], words: list[str], is_true: bool) -> None:
        image.append(img)
        question.append(len(attribute) - 1)
        correct.append(is_true)
        tokens.append(encode(context + words, eos=False))
        score_from.append(1 + len(context))

    for img, scene in enumerate(scenes):
        context = count_words(len(scene.objects))
        for obj in scene.objects:
            for attr, values in ATTRIBUTES.items():
                attribute.append(attr)
                for value in range(len(values)):
                    alt: Obj = replace(obj, **{_FIELD[attr]: value})
                    add(img, context, alt.words(), value == getattr(obj, _FIELD[attr]))
        if max_objects > min_objects:
            attribute.append("count")
            for n in range(min_objects, max_objects + 1):
                add(img, [], count_words(n), n == len(scene.objects))
    return Questions(np.array(image), np.array(question), np.array(correct), tokens, np.array(score_from),
                     attribute)


def candidate_scores(model: UnifiedModel, embeds: torch.Tensor, scenes: list[Scene], cfg: RunConfig,
                     split: Split) -> torch.Tensor:
    """Log-likelihood (C,) of each candidate caption of `scenes` (in `build_questions` order) given its image's
    visual embeddings `embeds`; each rank of `split` scores the candidates of its block of images."""
    rows = split.rows(len(scenes))
    q = build_questions(scenes[rows], cfg.data.min_objects, cfg.data.max_objects)
    forwards = split.most(math.ceil(len(q.tokens) / CHUNK))
    return split.gather(sequence_scores(model, embeds[rows], q.image, q.tokens, q.score_from, model.pad_id,
                                        forwards=forwards))


def answered_right(scores: torch.Tensor, q: Questions) -> np.ndarray:
    """Per question: whether its true candidate strictly beats every alternative."""
    s = scores.double().numpy()
    n = len(q.attribute)
    best_wrong = np.full(n, -np.inf)
    np.maximum.at(best_wrong, q.question[~q.correct], s[~q.correct])
    true_score = np.full(n, -np.inf)
    true_score[q.question[q.correct]] = s[q.correct]
    return true_score > best_wrong


def accuracy_by_attribute(scores: torch.Tensor, q: Questions) -> dict[str, float]:
    """Per attribute: fraction of questions whose true candidate strictly beats every alternative."""
    right, attrs = answered_right(scores, q), np.array(q.attribute)
    return {a: float(right[attrs == a].mean()) for a in dict.fromkeys(q.attribute)}


def question_images(q: Questions) -> np.ndarray:
    """The image each question (not candidate) is about."""
    first = np.unique(q.question, return_index=True)[1]
    return q.image[first]


def chance_levels(cfg: RunConfig) -> dict[str, float]:
    """Each attribute's chance accuracy (one over its number of values)."""
    out = {a: 1 / len(v) for a, v in ATTRIBUTES.items()}
    if cfg.data.max_objects > cfg.data.min_objects:
        out["count"] = 1 / (cfg.data.max_objects - cfg.data.min_objects + 1)
    return out


def summarise(acc: dict[str, float], prefix: str) -> dict[str, float]:
    """Per-attribute accuracies plus their mean over object attributes (the primary metric)."""
    out = {f"{prefix}/{a}": v for a, v in acc.items()}
    out[prefix] = float(np.mean([acc[a] for a in ATTRIBUTES]))
    return out


@torch.no_grad()
def zero_shot(model: UnifiedModel, cfg: RunConfig, embeds: torch.Tensor, scenes: list[Scene],
              split: Split = ONE, answers: dict | None = None) -> dict[str, float]:
    """Zero-shot accuracies of the images whose visual input embeddings are `embeds`, scored across `split`, with
    `zs_norm_se`, the binomial standard error of `zs_norm` from the number of questions (the noise of scoring this
    many images). `answers`, if given, receives each question's image, attribute and whether it was answered right
    (for the image-resampling noise of a paired difference)."""
    q = build_questions(scenes, cfg.data.min_objects, cfg.data.max_objects)
    right = answered_right(candidate_scores(model, embeds, scenes, cfg, split), q)
    attrs = np.array(q.attribute)
    out = summarise({a: float(right[attrs == a].mean()) for a in dict.fromkeys(q.attribute)}, "zs_acc")
    chance = chance_levels(cfg)
    out.update({f"chance/{a}": c for a, c in chance.items()})
    out["chance"] = float(np.mean([chance[a] for a in ATTRIBUTES]))
    out[NORMALISED] = chance_normalised(out, chance)
    variance = [out[f"zs_acc/{a}"] * (1 - out[f"zs_acc/{a}"]) / (attrs == a).sum() / (1 - chance[a]) ** 2
                for a in ATTRIBUTES]
    out[f"{NORMALISED}_se"] = float(np.sqrt(np.sum(variance)) / len(ATTRIBUTES))
    if answers is not None:
        answers.update(image=question_images(q), attribute=attrs, right=right)
    return out


NORMALISED = "zs_norm"  # world v2's primary metric


def chance_normalised(out: dict[str, float], chance: dict[str, float]) -> float:
    """Mean over the object attributes of (accuracy - chance) / (1 - chance): 0 at chance, 1 when perfect, so an
    attribute counts by what it needs learning (colour's chance is 1/6, size's 1/2)."""
    return float(np.mean([(out[f"zs_acc/{a}"] - chance[a]) / (1 - chance[a]) for a in ATTRIBUTES]))


@torch.no_grad()
def masked_view_scaling(model: UnifiedModel, cfg: RunConfig, embeds: torch.Tensor, scenes: list[Scene],
                        generator: torch.Generator, flops_per_token: float, split: Split = ONE) -> list[dict]:
    """Accuracy when candidate scores are averaged over K randomly masked views, for each K (the masks drawn for
    every image, whatever the split)."""
    q = build_questions(scenes, cfg.data.min_objects, cfg.data.max_objects)
    ratio = torch.full((embeds.shape[0],), cfg.eval.view_mask_ratio, dtype=torch.float64)
    views = [candidate_scores(model, model.mask_inputs(embeds, random_mask(ratio, embeds.shape[1], generator).to(
        embeds.device)), scenes, cfg, split) for _ in range(max(cfg.eval.views))]
    tokens_per_image = sum(embeds.shape[1] + len(t) for t in q.tokens) / len(scenes)
    rows = []
    for k in sorted(cfg.eval.views):
        acc = summarise(accuracy_by_attribute(torch.stack(views[:k]).mean(0), q), "zs_acc")
        rows.append({"views": k, "inference_flops_per_image": k * tokens_per_image * flops_per_token, **acc})
    return rows
