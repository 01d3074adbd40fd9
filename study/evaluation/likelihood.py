"""Log-likelihood of token sequences given an image: the scorer of every multiple-choice style evaluation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from study.data.batch import pad_tokens
from study.model.unified import UnifiedModel

CHUNK = 512


@torch.no_grad()
def sequence_scores(model: UnifiedModel, embeds: torch.Tensor, image: np.ndarray, tokens: list[list[int]],
                    score_from: np.ndarray, pad_id: int, chunk: int = CHUNK, forwards: int = 0) -> torch.Tensor:
    """Sum of log p over positions score_from .. end of each sequence (C,), given the visual embeddings
    `embeds[image[c]]`; sequences start with the start token, and only their own tokens are scored. At least
    `forwards` forwards are made (the extra ones score the first chunk again, discarded): ranks of a split evaluation
    make as many as the busiest (study/evaluation/ranks.py)."""
    v, device, scores = embeds.shape[1], embeds.device, []
    starts = list(range(0, len(tokens), chunk))
    for lo in starts + [0] * max(0, forwards - len(starts)):
        rows = tokens[lo: lo + chunk]
        ids = pad_tokens(rows, pad_id).to(device)
        hidden, _ = model(embeds[torch.from_numpy(image[lo: lo + chunk]).to(device)], ids)
        logp = F.log_softmax(model.text_logits(hidden, v)[:, :-1].float(), dim=-1)
        token_logp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        position = torch.arange(1, ids.shape[1], device=device)[None]
        lengths = torch.tensor([len(r) for r in rows], device=device)[:, None]
        start = torch.from_numpy(score_from[lo: lo + chunk]).to(device)[:, None]
        scores.append((token_logp * ((position < lengths) & (position >= start))).sum(-1))
    return torch.cat(scores[: len(starts)]).cpu()
