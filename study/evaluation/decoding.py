"""Greedy caption decoding with a KV cache: the image and the start token are fed once, then one token per step."""

from __future__ import annotations

import torch

from study.model.layers import KVCache
from study.model.unified import UnifiedModel


@torch.no_grad()
def greedy_decode(model: UnifiedModel, embeds: torch.Tensor, max_tokens: int, end_id: int,
                  prompt: list[int] | None = None) -> list[list[int]]:
    """The greedy continuation (ids, without the end token) of [image][prompt] for each image of `embeds`
    (B, V, D), at most `max_tokens` ids each; `prompt` defaults to the model's start token."""
    b = embeds.shape[0]
    tokens = torch.tensor([prompt or [model.bos_id]] * b, dtype=torch.long, device=embeds.device)
    cache = KVCache()
    hidden, _ = model(embeds, tokens, cache=cache)
    out = torch.full((b, max_tokens), end_id, dtype=torch.long, device=embeds.device)
    done = torch.zeros(b, dtype=torch.bool, device=embeds.device)
    for i in range(max_tokens):
        nxt = model.llm.lm_head(hidden[:, -1]).argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, end_id), nxt)
        out[:, i] = nxt
        done |= nxt == end_id
        if bool(done.all()) or i == max_tokens - 1:
            break
        hidden, _ = model(embeds[:, :0], nxt[:, None], cache=cache)
    return [row[: row.index(end_id)] if end_id in row else row for row in out.tolist()]
