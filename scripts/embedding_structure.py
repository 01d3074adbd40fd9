"""How much of a run's visual input embeddings (projector outputs) is shared by all tokens of an image.

    python scripts/embedding_structure.py RUN_DIR [RUN_DIR ...]

For 256 held-out images, from the run's latest checkpoint: the share of the embeddings' variance explained by
the image (the same vector at every token of it) and by the token position, and the mean cosine between
neighbouring tokens. A semantic target that collapses to one vector per image makes next-token prediction
trivial (cosine near 1) while erasing where things are.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from study.data.batch import make_batch
from study.data.loader import held_out_indices
from study.rebuild import load_vlm


@torch.no_grad()
def structure(run_dir: str, images: int = 256) -> dict[str, float]:
    """How much of a run's visual-embedding variance is shared by an image's tokens and by a position, and the neighbour
    cosine."""
    run = load_vlm(run_dir, command="embedding_structure")
    cfg, model = run.inputs.resolved, run.model
    _, emb = model.encode(make_batch(run.inputs.world, held_out_indices(0, images)).images)
    total = (emb - emb.mean((0, 1), keepdim=True)).pow(2).sum()
    share = {name: float(1 - (emb - emb.mean(dim, keepdim=True)).pow(2).sum() / total)
             for name, dim in (("image", 1), ("position", 0))}
    neighbours = float(F.cosine_similarity(emb[:, 1:], emb[:, :-1], dim=-1).mean())
    return {"target": cfg.objective.target, "variance_share_image": share["image"],
            "variance_share_position": share["position"], "neighbour_cosine": neighbours}


if __name__ == "__main__":
    for run in sys.argv[1:]:
        print(run, {k: round(v, 3) if isinstance(v, float) else v for k, v in structure(run).items()})
