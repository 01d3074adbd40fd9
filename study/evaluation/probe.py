"""Linear probes: classify each object's attributes from frozen features pooled over its cell.

Features come from a named layer (encoder, projector, llm.<k>, llm.mid, llm.final), averaged over the
patches whose centres lie in the object's 3x3 cell; a multinomial logistic regression is fit on the
probe-train images and scored on the probe-test images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from study.config import RunConfig
from study.data.world import COLOURS, SHAPES, SIZES, Scene
from study.evaluation.ranks import ONE, Split
from study.model.unified import UnifiedModel

PROBE_TARGETS = {"shape": len(SHAPES), "colour": len(COLOURS), "size": len(SIZES)}
TRAIN_FRACTION = 0.7


def cell_of_patches(image_size: int, patch: int) -> torch.Tensor:
    """The 3x3 cell (0..8) of each patch centre, raster order."""
    side = image_size // patch
    centres = (torch.arange(side) + 0.5) * patch
    row = (centres * 3 / image_size).long().clamp(max=2)
    return (row[:, None] * 3 + row[None, :]).flatten()


@torch.no_grad()
def layer_features(model: UnifiedModel, images: torch.Tensor, layer: str) -> torch.Tensor:
    """Per-visual-token features (B, V, D) at `layer`."""
    enc, embeds = model.encode(images)
    if layer == "encoder":
        return enc
    if layer == "projector":
        return embeds
    bos = torch.full((images.shape[0], 1), model.bos_id, dtype=torch.long, device=images.device)
    final, layers = model(embeds, bos, keep_layers=True)
    v = model.num_visual
    if layer == "llm.final":
        return final[:, :v]
    index = (len(layers) - 1) // 2 if layer == "llm.mid" else int(layer.removeprefix("llm."))
    return layers[index][:, :v]


def object_features(features: torch.Tensor, scenes: list[Scene],
                    cells: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], np.ndarray]:
    """Cell-pooled features (N_objects, D), attribute labels, and each object's image index."""
    rows, labels, owner = [], {k: [] for k in PROBE_TARGETS}, []
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            rows.append(features[i, cells == obj.cell].mean(0))
            for k in PROBE_TARGETS:
                labels[k].append(getattr(obj, k))
            owner.append(i)
    return torch.stack(rows).float(), {k: torch.tensor(v) for k, v in labels.items()}, np.array(owner)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float = 1e-3) -> torch.Tensor:
    """Weights (D + 1, classes) of an L2-regularised multinomial logistic regression, by L-BFGS."""
    xb = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    w = torch.zeros(xb.shape[1], classes, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xb @ w, y) + l2 * w[:-1].pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach()


def linear_probe(model: UnifiedModel, cfg: RunConfig, images: torch.Tensor, scenes: list[Scene],
                 split: Split = ONE) -> dict[str, float]:
    """Probe accuracies of `images`' features, each rank of `split` extracting those of its block of images."""
    local = layer_features(model, images[split.rows(len(images))], cfg.eval.probe_layer)
    return probe_scores(split.gather(local.float().cpu()), cfg, scenes)


def train_test_accuracy(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, classes: int) -> tuple[float, float]:
    """(test accuracy, test majority-class rate) of a probe fit on the rows where `train` holds; features are
    standardised with the training rows' mean and std."""
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mean) / std
    w = fit_logistic(x[train], y[train], classes)
    pred = (torch.cat([x[~train], torch.ones(int((~train).sum()), 1)], dim=1) @ w).argmax(-1)
    test = y[~train]
    return float((pred == test).float().mean()), float(torch.bincount(test, minlength=classes).max() / len(test))


def probe_scores(feats: torch.Tensor, cfg: RunConfig, scenes: list[Scene]) -> dict[str, float]:
    """Probe accuracy per attribute from per-token features (B, V, D), with each attribute's majority chance."""
    x, labels, owner = object_features(feats, scenes, cell_of_patches(cfg.data.image_size, cfg.model.patch_size))
    train = torch.from_numpy(owner < int(TRAIN_FRACTION * len(scenes)))
    out = {}
    with torch.autocast("cpu", enabled=False):  # the probe is fit in fp32 whatever the run's precision
        for name, classes in PROBE_TARGETS.items():
            out[f"probe_acc/{name}"], out[f"chance/probe_{name}"] = train_test_accuracy(x, labels[name], train,
                                                                                          classes)
    return out
