"""A trained run as an lmms-eval model, for the benchmarks this toolkit does not implement itself (extra `lmms`).

`RunLMM` implements lmms-eval's model interface on plain requests (objects with `.args`), so it is tested without
lmms-eval installed:
- `loglikelihood`: args (context, target, doc_to_visual, doc_id, task, split) -> (log p(target | image, context),
  whether greedy decoding would have produced the target);
- `generate_until`: args (context, gen_kwargs, doc_to_visual, doc_id, task, split) -> the greedy continuation,
  cut at the first of `gen_kwargs["until"]`, at most `max_new_tokens` tokens.
`target` may be a string or a function of the document; `doc_to_visual` maps the document
(`task_dict[task][split][doc_id]`, which lmms-eval sets) to a list of PIL images, of which the first is shown.
`register()` subclasses lmms-eval's `lmms` base class and registers the model as `unihetero`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from study.data.shards import as_input, fit_image, image_size
from study.evaluation.bench.captioning import max_new_tokens
from study.evaluation.bench.prompts import Prompts
from study.evaluation.bench.scoring import model_device
from study.evaluation.decoding import greedy_decode
from study.evaluation.likelihood import sequence_scores
from study.rebuild import load_vlm


class RunLMM:
    def __init__(self, run_dir: str, step: int | None = None, device: str | None = None):
        run = load_vlm(run_dir, step, "lmms-eval")
        self.cfg, self.model, self.step = run.inputs.resolved, run.model, run.step
        if device:
            self.model.to(device)
        self.prompts, self.size = Prompts(self.cfg), image_size(self.cfg)
        self.task_dict: dict = {}  # lmms-eval fills it: task -> split -> documents

    def _image(self, doc_to_visual, doc_id: int, task: str, split: str) -> torch.Tensor:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        if not visuals:
            raise ValueError(f"task {task} document {doc_id}: no image")
        return as_input(fit_image(visuals[0], self.size)[None], model_device(self.model))

    @torch.no_grad()
    def loglikelihood(self, requests: Sequence) -> list[tuple[float, bool]]:
        out = []
        codec = self.prompts.codec
        for request in requests:
            context, target, doc_to_visual, doc_id, task, split = request.args
            if callable(target):
                target = target(self.task_dict[task][split][doc_id])
            _, embeds = self.model.encode(self._image(doc_to_visual, doc_id, task, split))
            head, cont = [codec.start, *codec.ids(context)], codec.ids(target)
            score = sequence_scores(self.model, embeds, np.zeros(1, dtype=np.int64), [head + cont],
                                    np.array([len(head)]), codec.pad_id)
            ids = torch.tensor([head + cont], device=embeds.device)
            hidden, _ = self.model(embeds, ids)
            predicted = self.model.text_logits(hidden, embeds.shape[1])[0, len(head) - 1: -1].argmax(-1)
            out.append((float(score[0]), predicted.tolist() == cont))
        return out

    @torch.no_grad()
    def generate_until(self, requests: Sequence) -> list[str]:
        out = []
        codec = self.prompts.codec
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            _, embeds = self.model.encode(self._image(doc_to_visual, doc_id, task, split))
            limit = int(gen_kwargs.get("max_new_tokens", max_new_tokens(self.cfg)))
            ids = greedy_decode(self.model, embeds, limit, codec.end, [codec.start, *codec.ids(context)])[0]
            text = codec.text(ids)
            until = gen_kwargs.get("until") or []
            for stop in [until] if isinstance(until, str) else until:
                text = text.split(stop)[0]
            out.append(text)
        return out


def register() -> type:
    """Register `unihetero` as an lmms-eval model (needs lmms-eval, which needs torchvision) and return the class."""
    from lmms_eval.api.model import lmms
    from lmms_eval.api.registry import register_model

    @register_model("unihetero")
    class UniheteroLMMS(RunLMM, lmms):
        def __init__(self, run_dir: str, step: int | None = None, device: str | None = None, **kwargs):
            lmms.__init__(self)
            RunLMM.__init__(self, run_dir, step, device)

        def generate_until_multi_round(self, requests):
            raise NotImplementedError("unihetero models answer single-round requests only")

    return UniheteroLMMS
