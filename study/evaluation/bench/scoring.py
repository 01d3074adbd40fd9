"""Scoring a benchmark's rows on the run's device, in blocks of images, each rank taking every world-th row.

A row is one image and its groups of candidates (a group: one context and its continuations; a multiple-choice
question asked under each rotation of its options has one group per rotation). The result per row is one
tensor of continuation log-likelihoods per group; rows scored on other ranks are gathered to every rank.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from study.data.shards import as_input
from study.evaluation.likelihood import sequence_scores
from study.model.unified import UnifiedModel

IMAGE_BLOCK = 64
Group = tuple[list[int], list[list[int]]]  # context ids, continuation ids


@dataclass(frozen=True)
class Shard:
    """Which rows this process scores: rank r of world w takes rows r, r + w, ...; results are all-gathered."""

    rank: int = 0
    world: int = 1

    def rows(self, n: int) -> range:
        return range(self.rank, n, self.world)

    def gather(self, n: int, mine: dict[int, object]) -> list:
        if self.world == 1:
            return [mine[i] for i in range(n)]
        parts: list[dict[int, object]] = [{} for _ in range(self.world)]
        torch.distributed.all_gather_object(parts, mine)
        merged = {k: v for part in parts for k, v in part.items()}
        return [merged[i] for i in range(n)]


ONE_PROCESS = Shard()


def model_device(model: UnifiedModel) -> torch.device:
    """The device the model's parameters are on."""
    return next(model.parameters()).device


@torch.no_grad()
def score_rows(model: UnifiedModel, images: torch.Tensor, groups: Callable[[int], list[Group]], pad_id: int,
               shard: Shard = ONE_PROCESS) -> list[list[torch.Tensor]]:
    """Per row, per group, the log-likelihood of each continuation given the row's image and the group's context."""
    device, n = model_device(model), len(images)
    rows = list(shard.rows(n))
    mine: dict[int, object] = {}
    for lo in range(0, len(rows), IMAGE_BLOCK):
        block = rows[lo: lo + IMAGE_BLOCK]
        _, embeds = model.encode(as_input(images[block], device))
        owner, sequences, starts, sizes, counts = [], [], [], [], []
        for j, row in enumerate(block):
            row_groups = groups(row)
            counts.append(len(row_groups))
            for context, continuations in row_groups:
                sizes.append(len(continuations))
                for cont in continuations:
                    owner.append(j)
                    sequences.append(context + cont)
                    starts.append(len(context))
        scores = sequence_scores(model, embeds, np.array(owner), sequences, np.array(starts), pad_id).split(sizes)
        k = 0
        for row, count in zip(block, counts, strict=True):
            mine[row] = list(scores[k: k + count])
            k += count
    return shard.gather(n, mine)
