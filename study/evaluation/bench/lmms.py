"""A trained run as an lmms-eval model, for the benchmarks this toolkit does not implement itself (extra `lmms`).

`RunLMM` answers lmms-eval's simple-model requests (its `Instance` objects: anything with `.args`); the class that
lmms-eval loads (`study/evaluation/bench/lmms_plugin.py`) adds lmms-eval's base class. Request layouts, as lmms-eval's
task code builds them (`lmms_eval/api/task.py`, `construct_requests`):
- `loglikelihood`: (context, continuation, doc_to_visual, doc_id, task, split) -> (log p(continuation | image,
  context), whether greedy decoding gives the continuation); `continuation` may be a function of the document; and
  (context, continuation), the unconditional requests of `acc_mutual_info`, scored without an image;
- `generate_until`: (context, gen_kwargs, doc_to_visual, doc_id, task, split) -> the greedy continuation, cut at the
  first of `gen_kwargs["until"]`, at most `max_new_tokens` tokens (clamped, with a warning, to what fits after the
  prompt).
`doc_to_visual` maps the document (`task_dict[task][split][doc_id]`, which lmms-eval sets) to a list of images, of
which the first is shown (none: scored without an image). Loglikelihood requests are scored `batch_size` at a time,
one forward per batch; generation requests that share their prompt and settings decode together. The rank and
world size are those of the process group the run's process joined (lmms-eval splits requests by them).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist
import torch.nn.functional as F

from study.data.batch import pad_tokens
from study.data.shards import as_input, fit_image, image_size
from study.evaluation.bench.captioning import max_new_tokens
from study.evaluation.bench.prompts import Prompts
from study.evaluation.bench.scoring import model_device
from study.evaluation.decoding import greedy_decode
from study.rebuild import load_vlm

BATCH_SIZE = 16


class Request(Protocol):
    """What this module reads of an lmms-eval `Instance`."""

    args: tuple[Any, ...]


@dataclass(frozen=True)
class Scored:
    """One loglikelihood request, tokenised: its image (or None) and [start, context..., continuation...]."""

    image: torch.Tensor | None
    tokens: list[int]
    score_from: int  # index of the continuation's first token


class RunLMM:
    """A trained run as an lmms-eval model: loglikelihood and generate_until over its checkpoint."""

    def __init__(self, run_dir: str, step: int | str | None = None, device: str | None = None,
                 batch_size: int | str = BATCH_SIZE):
        run = load_vlm(run_dir, None if step in (None, "", "None") else int(step), "lmms-eval")
        self.cfg, self.model, self.step = run.inputs.resolved, run.model, run.step
        if device:
            self.model.to(device)
        self.model.eval()
        self.prompts, self.size, self.batch_size = Prompts(self.cfg), image_size(self.cfg), int(batch_size)
        self.task_dict: dict = {}  # lmms-eval fills it: task -> split -> documents
        self._rank, self._world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    def _document(self, task: str, split: str, doc_id: int) -> dict:
        return self.task_dict[task][split][doc_id]

    def _image(self, doc_to_visual: Callable | None, doc_id: int, task: str, split: str) -> torch.Tensor | None:
        visuals = doc_to_visual(self._document(task, split, doc_id)) if doc_to_visual is not None else None
        return fit_image(visuals[0], self.size) if visuals else None

    def _tokens(self, context: str, continuation: str, where: str) -> tuple[list[int], int]:
        """[start, context, continuation], the context cut from the left to fit the model (as lm-eval does)."""
        codec = self.prompts.codec
        cont = codec.ids(continuation)
        room = self.model.text_capacity - 1 - len(cont)
        if room < 0:
            raise ValueError(f"{where}: a continuation of {len(cont)} tokens does not fit the model's "
                             f"{self.model.text_capacity} text positions")
        head = codec.ids(context)[-room:] if room else []
        return [codec.start, *head, *cont], 1 + len(head)

    def _parse(self, request: Request) -> Scored:
        args = request.args
        if len(args) == 2:  # acc_mutual_info's unconditional request: no image
            context, continuation = args
            tokens, start = self._tokens(context, continuation, "an unconditional request")
            return Scored(None, tokens, start)
        context, continuation, doc_to_visual, doc_id, task, split = args
        if callable(continuation):
            continuation = continuation(self._document(task, split, doc_id))
        tokens, start = self._tokens(context, continuation, f"task {task} document {doc_id}")
        return Scored(self._image(doc_to_visual, doc_id, task, split), tokens, start)

    @torch.no_grad()
    def _score(self, batch: list[Scored]) -> list[tuple[float, bool]]:
        """One forward for a batch of requests that all have an image, or none has."""
        device = model_device(self.model)
        if batch[0].image is not None:
            _, embeds = self.model.encode(as_input(torch.stack([s.image for s in batch]), device))
        else:
            table = self.model.llm.tok_embed.weight
            embeds = table.new_zeros(len(batch), 0, table.shape[1])
        ids = pad_tokens([s.tokens for s in batch], self.prompts.codec.pad_id).to(device)
        hidden, _ = self.model(embeds, ids)
        logits = self.model.text_logits(hidden, embeds.shape[1])[:, :-1].float()
        token_logp = F.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        hits = logits.argmax(-1) == ids[:, 1:]
        out = []
        for i, s in enumerate(batch):
            scored = slice(s.score_from - 1, len(s.tokens) - 1)  # predictions of tokens score_from .. end
            out.append((float(token_logp[i, scored].sum()), bool(hits[i, scored].all())))
        return out

    def loglikelihood(self, requests: Sequence[Request]) -> list[tuple[float, bool]]:
        parsed = [self._parse(r) for r in requests]
        out: list[tuple[float, bool] | None] = [None] * len(parsed)
        for with_image in (True, False):
            order = [i for i, s in enumerate(parsed) if (s.image is not None) == with_image]
            for lo in range(0, len(order), self.batch_size):
                chunk = order[lo: lo + self.batch_size]
                for i, result in zip(chunk, self._score([parsed[i] for i in chunk]), strict=True):
                    out[i] = result
        return out  # type: ignore[return-value]

    def _limit(self, gen_kwargs: dict, prompt: list[int]) -> int:
        """max_new_tokens (default: the longest caption the run trained on), clamped to what fits after `prompt`."""
        asked = int(gen_kwargs.get("max_new_tokens", max_new_tokens(self.cfg)))
        room = self.model.text_capacity - len(prompt)
        if asked > room:
            warnings.warn(f"max_new_tokens={asked} does not fit after a prompt of {len(prompt)} tokens in the "
                          f"model's {self.model.text_capacity} text positions: generating at most {room}",
                          stacklevel=3)
        return max(0, min(asked, room))

    @torch.no_grad()
    def generate_until(self, requests: Sequence[Request]) -> list[str]:
        codec, device = self.prompts.codec, model_device(self.model)
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            context, gen_kwargs, *_ = request.args
            groups.setdefault((context, repr(sorted(gen_kwargs.items()))), []).append(i)
        out = [""] * len(requests)
        for members in groups.values():
            context, gen_kwargs = requests[members[0]].args[:2]
            prompt = [codec.start, *codec.ids(context)][-self.model.text_capacity:]
            limit = self._limit(gen_kwargs, prompt)
            until = gen_kwargs.get("until") or []
            for lo in range(0, len(members), self.batch_size):
                chunk = members[lo: lo + self.batch_size]
                images = [self._image(*requests[i].args[2:]) for i in chunk]
                if any(im is None for im in images):
                    raise ValueError(f"task {requests[chunk[0]].args[4]}: generation needs an image per document")
                _, embeds = self.model.encode(as_input(torch.stack(images), device))
                for i, ids in zip(chunk, greedy_decode(self.model, embeds, limit, codec.end, prompt), strict=True):
                    text = codec.text(ids)
                    for stop in [until] if isinstance(until, str) else until:
                        text = text.split(stop)[0]
                    out[i] = text
        return out
