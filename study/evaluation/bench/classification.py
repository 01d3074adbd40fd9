"""Labelled image sets: zero-shot classification by likelihood of class-name prompts, and a linear probe.

Zero-shot top-1: the class whose prompt continuation scores highest (`prompts.Prompts.classes`), beside chance
(1 / classes) and the majority-class rate. The linear probe: the run's frozen features at `eval.probe_layer`,
averaged over the visual tokens, fit by multinomial logistic regression (`study.evaluation.probe`) on a
stratified split: within each class, a seed-0 permutation's first 70% train and the rest test (classes with
one image train only). Its chance is the test split's majority-class rate.
"""

from __future__ import annotations

import numpy as np
import torch

from study.config import RunConfig
from study.data.shards import as_input
from study.evaluation.bench.items import Classification
from study.evaluation.bench.prompts import Prompts
from study.evaluation.bench.scoring import IMAGE_BLOCK, ONE_PROCESS, Shard, model_device, score_rows
from study.evaluation.probe import TRAIN_FRACTION, layer_features, train_test_accuracy
from study.model.unified import UnifiedModel


def stratified_split(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A boolean train mask: within each class, the first TRAIN_FRACTION of a seeded permutation."""
    rng = np.random.default_rng(seed)
    train = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique().tolist():
        members = rng.permutation(np.flatnonzero(labels.numpy() == c))
        train[members[: max(1, int(round(TRAIN_FRACTION * len(members))))]] = True
    return train


@torch.no_grad()
def pooled_features(model: UnifiedModel, cfg: RunConfig, images: torch.Tensor, shard: Shard) -> torch.Tensor:
    """Features (N, D) at `eval.probe_layer`, averaged over the visual tokens."""
    device, rows = model_device(model), list(shard.rows(len(images)))
    mine = {}
    for lo in range(0, len(rows), IMAGE_BLOCK):
        block = rows[lo: lo + IMAGE_BLOCK]
        feats = layer_features(model, as_input(images[block], device), cfg.eval.probe_layer).float().mean(1).cpu()
        mine.update(zip(block, feats, strict=True))
    return torch.stack(shard.gather(len(images), mine))


def probe_accuracy(features: torch.Tensor, labels: torch.Tensor, classes: int) -> dict[str, float]:
    """Held-out accuracy of a linear probe on the features (stratified split), with its chance level and split sizes."""
    train = stratified_split(labels)
    if train.all():
        return {}
    acc, chance = train_test_accuracy(features, labels, train, classes)
    return {"probe_acc": acc, "probe_chance": chance, "probe_train_n": int(train.sum()),
            "probe_test_n": int((~train).sum())}


def evaluate_classification(model: UnifiedModel, cfg: RunConfig, prompts: Prompts, task: Classification,
                            shard: Shard = ONE_PROCESS) -> dict:
    """Zero-shot top-1 by scoring every class prompt, beside chance and the majority class."""
    classes = len(task.class_names)
    group = prompts.classes(task.class_names, task.prompt)
    scores = score_rows(model, task.images, lambda i: [group], prompts.codec.pad_id, shard)
    predicted = torch.stack([row[0].argmax() for row in scores])
    out = {"top1": float((predicted == task.labels).float().mean()), "chance": 1 / classes,
           "majority": float(torch.bincount(task.labels, minlength=classes).max() / len(task.labels)),
           "n": len(task.labels)}
    out.update(probe_accuracy(pooled_features(model, cfg, task.images, shard), task.labels, classes))
    return out
