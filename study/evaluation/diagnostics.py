"""Collapse diagnostics of the visual input embeddings (projector outputs), in every evaluation.

For embeddings e[b, v] of B held-out images with V tokens each, around their global mean:
- `diag/image_share`: share of the variance explained by the image (its mean over its tokens): the part that
  is one vector per image. A semantic target regressed from the model's own embeddings can make every token
  of an image alike; next-token prediction is then trivial and where things are is lost.
- `diag/global_share`: share explained by the token position (its mean over images): the part common to all
  images; 1 when every image gives the same embeddings.
- `diag/neighbour_cos`: mean cosine between consecutive tokens.
- `diag/effective_rank`: exp of the entropy of the normalised singular values of the centred token matrix
  (Roy & Vetterli 2007): how many directions the tokens use.
An arm is *collapsed* (`is_collapsed`) when image_share >= IMAGE_SHARE_COLLAPSED or global_share >=
GLOBAL_SHARE_COLLAPSED: most of what its tokens carry is then per image, or the same for every image. (v1's
text-only runs sit at image_share 0.10-0.12; its collapsed semantic arms at 0.96-0.995.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMAGE_SHARE_COLLAPSED = 0.7
GLOBAL_SHARE_COLLAPSED = 0.9
DEGENERATE = 1e-10  # total variance below this share of the embeddings' energy: one vector everywhere


@torch.no_grad()
def collapse_diagnostics(embeds: torch.Tensor) -> dict[str, float]:
    """The four diagnostics of embeddings (B, V, D)."""
    e = embeds.double()
    centred = e - e.mean((0, 1), keepdim=True)
    total = float(centred.pow(2).sum())
    energy = float(e.pow(2).sum())
    out = {"diag/neighbour_cos": float(F.cosine_similarity(e[:, 1:], e[:, :-1], dim=-1).mean())}
    if total <= DEGENERATE * max(energy, 1e-300):
        return out | {"diag/image_share": 0.0, "diag/global_share": 1.0, "diag/effective_rank": 1.0}
    v, b = e.shape[1], e.shape[0]
    image = float((e.mean(1) - e.mean((0, 1))).pow(2).sum()) * v / total
    position = float((e.mean(0) - e.mean((0, 1))).pow(2).sum()) * b / total
    s = torch.linalg.svdvals(centred.flatten(0, 1))
    p = s / s.sum()
    p = p[p > 0]
    rank = math.exp(float(-(p * p.log()).sum()))
    return out | {"diag/image_share": image, "diag/global_share": position, "diag/effective_rank": rank}


def is_collapsed(record: dict) -> bool | None:
    """Whether an evaluation record's diagnostics say the visual input collapsed (None: no diagnostics)."""
    image, common = record.get("diag/image_share"), record.get("diag/global_share")
    if image is None or common is None:
        return None
    return image >= IMAGE_SHARE_COLLAPSED or common >= GLOBAL_SHARE_COLLAPSED


COLLAPSE_RULE = (f"collapsed: diag/image_share >= {IMAGE_SHARE_COLLAPSED} or diag/global_share >= "
                 f"{GLOBAL_SHARE_COLLAPSED} at the final evaluation (study/evaluation/diagnostics.py)")
