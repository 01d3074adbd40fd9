"""How much of each object a semantic arm's free-running rollout keeps, in units every arm shares: accuracy of
attribute probes (shape, colour, size) applied to the rolled-out features.

The probes are fit on the true targets of the probe images, each object's features pooled over the rolled-out
positions inside its 3x3 cell (objects whose cell the rollout does not reach are left out), and applied to the
same pooling of the rollout's predictions on the evaluation images, beside three references in the same units:
the probe on those images' true targets (what the target space holds at all), on the trivial rollout that copies
the last given target, and the majority class of the probe images. Arms whose targets live in different spaces
(input embeddings, encoder outputs) are compared by these accuracies, not by their errors in their own spaces.
"""

from __future__ import annotations

import numpy as np
import torch

from study.config import RunConfig
from study.data.world import Scene
from study.evaluation.probe import PROBE_TARGETS, cell_of_patches, fit_logistic
from study.model.unified import UnifiedModel

MIN_OBJECTS = 10  # fewer probe-training objects than this: no probe


def pooled(features: torch.Tensor, scenes: list[Scene], cells: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Per object whose cell holds a rolled-out position: its features (B, steps, D) averaged over those positions
    (N, D), and its attribute labels."""
    rows, labels = [], {k: [] for k in PROBE_TARGETS}
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            inside = cells == obj.cell
            if inside.any():
                rows.append(features[i, inside].float().mean(0))
                for k in PROBE_TARGETS:
                    labels[k].append(getattr(obj, k))
    width = features.shape[-1]
    x = torch.stack(rows).cpu() if rows else torch.zeros(0, width)
    return x, {k: torch.tensor(v, dtype=torch.long) for k, v in labels.items()}


@torch.no_grad()
def rollout_probes(model: UnifiedModel, cfg: RunConfig, positions: range, probe_images: torch.Tensor,
                   probe_scenes: list[Scene], targets: torch.Tensor, rolled: torch.Tensor,
                   scenes: list[Scene]) -> dict[str, float]:
    """`rollout_probe/<attribute>` on the rollout `rolled` (B, steps, D) at visual `positions` of images whose true
    targets are `targets` (B, V, D) and scenes `scenes`, with `rollout_probe_true/`, `rollout_probe_copy_last/` and
    `chance/rollout_probe_` beside it; nothing when too few objects lie where the rollout reaches."""
    cells = cell_of_patches(cfg.data.image_size, cfg.model.patch_size)[positions.start:positions.stop]
    enc, embeds = model.encode(probe_images)
    x_train, y_train = pooled(model.semantic_targets(enc, embeds)[:, positions.start:positions.stop], probe_scenes,
                              cells)
    copy = targets[:, positions.start - 1:positions.start].expand_as(rolled)
    evaluated = {name: pooled(features, scenes, cells) for name, features in
                 (("", rolled), ("_true", targets[:, positions.start:positions.stop]), ("_copy_last", copy))}
    if len(x_train) < MIN_OBJECTS or len(evaluated[""][0]) == 0:
        return {}
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    out = {}
    with torch.autocast(x_train.device.type, enabled=False), torch.enable_grad():
        for attribute, classes in PROBE_TARGETS.items():
            w = fit_logistic((x_train - mean) / std, y_train[attribute], classes)
            for name, (x, y) in evaluated.items():
                logits = torch.cat([(x - mean) / std, torch.ones(len(x), 1)], dim=1) @ w
                out[f"rollout_probe{name}/{attribute}"] = float((logits.argmax(-1) == y[attribute]).float().mean())
            majority = int(np.bincount(y_train[attribute].numpy(), minlength=classes).argmax())
            out[f"chance/rollout_probe_{attribute}"] = float((evaluated[""][1][attribute] == majority).float().mean())
    return out
