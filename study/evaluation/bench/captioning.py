"""Captioning: greedy decoding with a KV cache (`study.evaluation.decoding`), scored by COCO's metrics
(`coco_metrics`: PTB tokenisation, BLEU-4, METEOR, ROUGE-L, CIDEr-D) against the references, beside a trivial
captioner that writes the most frequent reference caption (as COCO tokenises it) for every image."""

from __future__ import annotations

from collections import Counter

import torch

from study.config import RunConfig
from study.data.shards import as_input
from study.data.tokenizer import max_caption_tokens
from study.evaluation.bench.coco_metrics import caption_metrics, coco_tokenize
from study.evaluation.bench.items import Captioning
from study.evaluation.bench.prompts import Prompts
from study.evaluation.bench.scoring import IMAGE_BLOCK, ONE_PROCESS, Shard, model_device
from study.evaluation.decoding import greedy_decode
from study.model.unified import UnifiedModel


def max_new_tokens(cfg: RunConfig) -> int:
    """The longest caption the run trained on, less its start and end tokens."""
    limit = cfg.data.max_caption_tokens if cfg.model.backbone == "hf" else max_caption_tokens(cfg.data.max_objects)
    return limit - 2


@torch.no_grad()
def generate_captions(model: UnifiedModel, cfg: RunConfig, prompts: Prompts, images: torch.Tensor,
                      shard: Shard = ONE_PROCESS) -> list[str]:
    """Greedy captions of the shard's images, gathered over the shards in image order."""
    device, rows = model_device(model), list(shard.rows(len(images)))
    mine = {}
    for lo in range(0, len(rows), IMAGE_BLOCK):
        block = rows[lo: lo + IMAGE_BLOCK]
        _, embeds = model.encode(as_input(images[block], device))
        ids = greedy_decode(model, embeds, max_new_tokens(cfg), prompts.codec.end, [prompts.codec.start])
        mine.update(zip(block, (prompts.codec.text(row) for row in ids), strict=True))
    return shard.gather(len(images), mine)


def evaluate_captioning(model: UnifiedModel, cfg: RunConfig, prompts: Prompts, task: Captioning,
                        shard: Shard = ONE_PROCESS) -> dict:
    """COCO caption metrics of the model's captions, beside those of one constant caption (the most frequent reference
    word)."""
    captions = generate_captions(model, cfg, prompts, task.images, shard)
    out = caption_metrics(captions, task.references) | {"n": len(captions)}
    constant = Counter(coco_tokenize([r for refs in task.references for r in refs])).most_common(1)[0][0]
    out.update({f"{k}_constant": v for k, v in caption_metrics([constant] * len(captions), task.references).items()})
    return out
