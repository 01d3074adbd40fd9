"""Multiple choice by likelihood, plain and circular (MMBench's CircularEval).

Plain: the question asked once, options in the file's order; right when the true option's continuation scores
strictly highest. Circular: the question asked once per rotation of its options (n options, n rotations);
right only when it is right under every rotation. Chance: the mean over questions of 1/n, and of (1/n)^n for
a guesser under circular evaluation.
"""

from __future__ import annotations

import numpy as np
import torch

from study.evaluation.bench.prompts import Prompts
from study.evaluation.bench.scoring import ONE_PROCESS, Shard, score_rows
from study.evaluation.bench.tasks import MultipleChoice
from study.model.unified import UnifiedModel


def rotations(n: int) -> list[list[int]]:
    """The n rotations of option order 0..n-1, the file's order first."""
    return [[(r + k) % n for k in range(n)] for r in range(n)]


def right_under(scores: torch.Tensor, order: list[int], answer: int) -> bool:
    """Whether the true option strictly beats every other under one ordering (scores follow `order`)."""
    true = order.index(answer)
    others = torch.cat([scores[:true], scores[true + 1:]])
    return bool(scores[true] > others.max())


def circular_accuracy(per_question: list[list[bool]]) -> tuple[float, float]:
    """(plain, circular) accuracy from each question's correctness under each rotation (the first: plain)."""
    plain = float(np.mean([r[0] for r in per_question]))
    return plain, float(np.mean([all(r) for r in per_question]))


def evaluate_choice(model: UnifiedModel, prompts: Prompts, task: MultipleChoice, shard: Shard = ONE_PROCESS) -> dict:
    items = task.items

    def groups(i: int):
        return [prompts.choice(items[i], order) for order in rotations(len(items[i].options))]

    scores = score_rows(model, task.images, groups, prompts.codec.pad_id, shard)
    correct = [[right_under(s, order, item.answer) for s, order in zip(row, rotations(len(item.options)), strict=True)]
               for row, item in zip(scores, items, strict=True)]
    plain, circular = circular_accuracy(correct)
    sizes = np.array([len(item.options) for item in items], dtype=float)
    return {"acc": plain, "acc_circular": circular, "chance": float(np.mean(1 / sizes)),
            "chance_circular": float(np.mean((1 / sizes) ** sizes)), "n": len(items)}
