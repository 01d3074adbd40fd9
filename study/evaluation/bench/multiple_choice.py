"""Multiple choice by likelihood, plain and circular (MMBench's CircularEval).

Plain: the question as the file's main row asks it; right when the true option's continuation scores strictly
highest. Circular: the question asked in each of its option orders (study/evaluation/bench/mmbench.py: the rotations
of a plain file, or the rows of a circular file's group); right only when right in every one. Accuracies are also
given per `category` and `l2-category` when the file has them. Chance: the mean over questions of 1/n for n options;
circular chance is the mean of (1/n)^m for m orders when the prompt shows the options (a guesser guesses each order
anew), and equals plain chance when it does not (the miniature prompt: every order is the same prompt, so a guesser
is right in all or in none).
"""

from __future__ import annotations

import numpy as np
import torch

from study.evaluation.bench.items import ChoiceItem, MultipleChoice
from study.evaluation.bench.prompts import Prompts
from study.evaluation.bench.scoring import ONE_PROCESS, Group, Shard, score_rows
from study.model.unified import UnifiedModel


def right_under(scores: torch.Tensor, order: list[int], answer: int) -> bool:
    """Whether the true option strictly beats every other under one ordering (scores follow `order`)."""
    true = order.index(answer)
    others = torch.cat([scores[:true], scores[true + 1:]])
    return bool(scores[true] > others.max())


def circular_accuracy(per_question: list[list[bool]]) -> tuple[float, float]:
    """(plain, circular) accuracy from each question's correctness in each of its orders (the first: plain)."""
    plain = float(np.mean([r[0] for r in per_question]))
    return plain, float(np.mean([all(r) for r in per_question]))


def chances(items: list[ChoiceItem], options_shown: bool) -> tuple[float, float]:
    """(plain, circular) accuracy of a uniform guesser."""
    n = np.array([len(item.options) for item in items], dtype=float)
    m = np.array([len(item.asked()) for item in items], dtype=float)
    return float(np.mean(1 / n)), float(np.mean((1 / n) ** m if options_shown else 1 / n))


def _by(items: list[ChoiceItem], correct: list[list[bool]], field: str, column: str) -> dict[str, float]:
    """Plain and circular accuracy of each value of `field` (named `column` in the file), when the file has it."""
    out: dict[str, float] = {}
    for value in sorted({getattr(item, field) for item in items} - {""}):
        mine = [c for c, item in zip(correct, items, strict=True) if getattr(item, field) == value]
        plain, circular = circular_accuracy(mine)
        out |= {f"{column}/{value}/acc": plain, f"{column}/{value}/acc_circular": circular}
    return out


def evaluate_choice(model: UnifiedModel, prompts: Prompts, task: MultipleChoice, shard: Shard = ONE_PROCESS) -> dict:
    """Multiple-choice accuracy by option likelihood, plain and circular (every option order the items ask), beside both
    chances, by category."""
    items = task.items

    def groups(i: int) -> list[Group]:
        return [prompts.choice(items[i], order) for order in items[i].asked()]

    scores = score_rows(model, task.images, groups, prompts.codec.pad_id, shard)
    correct = [[right_under(s, order, item.answer) for s, order in zip(row, item.asked(), strict=True)]
               for row, item in zip(scores, items, strict=True)]
    plain, circular = circular_accuracy(correct)
    chance, chance_circular = chances(items, prompts.lettered)
    return {"acc": plain, "acc_circular": circular, "chance": chance, "chance_circular": chance_circular,
            "n": len(items), **_by(items, correct, "category", "category"),
            **_by(items, correct, "l2_category", "l2-category")}
