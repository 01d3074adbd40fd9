"""Peak memory of one training step on one rank, estimated without allocating anything.

The run's model and optimizer are built under `FakeTensorMode` (tensors with shapes and dtypes, no storage) and one
training step is traced at the run's real shapes: a micro-batch of batch_size / (ranks x grad_accum) rows, the
run's precision (bf16 autocast or fp32), its activation checkpointing, its losses and their draws, the backward
and AdamW's step (its state is made at the first step, so the first step is the largest). PyTorch's own
dispatch mode follows every storage made in the step until it is freed and keeps the high-water marks of forward
and backward and of the optimizer's step; the parameters, gradients and AdamW's moments are counted from their
shapes.

Across ranks: DDP replicates everything; FSDP (`study.distributed`) shards parameters, gradients and optimizer state
over the ranks and gathers one transformer block at a time, so its estimate is those three divided by the ranks plus
the largest block's parameters and gradients whole (during backward the gradients made so far are not divided: an
upper bound). Pretrained backbones are built from their config files alone (shapes, no weights). Not counted: the
allocator's fragmentation and cache, the communication buffers, the CUDA context (about 0.5-1 GB on a GPU), the data
loader's batches.
"""

from __future__ import annotations

import dataclasses
import weakref
from contextlib import nullcontext

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from study.config import RunConfig
from study.data.tokenizer import max_caption_tokens

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """Bytes at the step's high-water mark, by kind, on one rank."""

    params: float
    grads: float
    optimizer: float
    activations: float  # forward and backward's high-water mark above the parameters (gradients made so far included)
    peak: float  # the step's high-water mark

    def as_gib(self) -> dict[str, float]:
        return {k: v / GIB for k, v in dataclasses.asdict(self).items()}


def caption_length(cfg: RunConfig) -> int:
    """The caption length in tokens that memory estimates use: the config's cap for a Hugging Face backbone, else the
    world's longest caption."""
    return cfg.data.max_caption_tokens if cfg.model.backbone == "hf" else max_caption_tokens(cfg.data.max_objects)


def _fake_from_meta(model: torch.nn.Module) -> None:
    """Parameters and buffers left on the meta device (pretrained backbones built from their configs) as fake
    tensors of the same shapes, which the traced step can run on; call inside the fake mode."""
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and p.is_meta:
                module._parameters[name] = torch.nn.Parameter(torch.empty(p.shape, dtype=p.dtype), p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None and b.is_meta:
                module._buffers[name] = torch.empty(b.shape, dtype=b.dtype)


class _Peak(TorchDispatchMode):
    """The bytes of every storage made inside it, followed until freed, on top of `resident` bytes made before:
    the current total and its high-water mark."""

    def __init__(self, resident: float):
        super().__init__()
        self.seen: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.now = self.peak = resident

    def _freed(self, size: int) -> None:
        self.now -= size

    def __torch_dispatch__(self, func: torch._ops.OpOverload, types: tuple[type, ...], args: tuple = (),
                           kwargs: dict | None = None) -> object:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage not in self.seen:
                    self.seen[storage] = size = storage.nbytes()
                    self.now += size
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(storage, self._freed, size)
        return out


def _traced_step(cfg: RunConfig, rows: int) -> tuple[float, float, float, float, float]:
    """Of one training step of `rows` rows: the high-water mark of forward and backward, that of the optimizer's
    step, all parameter bytes, the trainable ones' bytes, the largest transformer block's parameter bytes."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from study.distributed import Ranks, parallelize, transformer_blocks
    from study.draws import step_draws
    from study.loop import build_optimizer
    from study.model.unified import UnifiedModel
    from study.objectives import loss_terms

    cpu, hf = torch.device("cpu"), cfg.model.backbone == "hf"
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = UnifiedModel(cfg, weights=not hf, tokenizer=not hf)  # pretrained backbones: their shapes only
        _fake_from_meta(model)
        parallelize(torch.nn.Identity(), model, dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, compile=False)), Ranks(0, 1, cpu))  # activation checkpointing wraps the blocks in place
        optimizer = build_optimizer(model, cfg)
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        buffers = sum(b.numel() * b.element_size() for b in model.buffers())
        largest = max((sum(p.numel() * p.element_size() for p in b.parameters())
                       for b in transformer_blocks(model)), default=0)
        size = getattr(model.encoder, "image_size", cfg.data.image_size)  # a pretrained encoder's own input size
        images = torch.rand(rows, 3, size, size)
        tokens = torch.zeros(rows, caption_length(cfg), dtype=torch.long)
        draws = step_draws(model, cfg, 0, cpu).slice(0, rows)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if cfg.train.precision == "bf16" else nullcontext()
        with _Peak(params + buffers) as tracker:
            with autocast:
                losses = loss_terms(model, cfg, images, tokens, draws.mask, draws.diffusion)
            losses["total"].backward()
            del losses
            forward_backward, tracker.peak = tracker.peak, tracker.now
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step = tracker.peak
    return float(forward_backward), float(step), float(params + buffers), float(trainable), float(largest)


def estimate_step_memory(cfg: RunConfig, ranks: int = 1, sharded: bool = False) -> StepMemory:
    """The high-water mark of one training step of `cfg` on one of `ranks` ranks (FSDP when `sharded`), with the
    state it holds: parameters, gradients of the trainable ones and AdamW's two moments (fp32, from their shapes)."""
    rows = max(1, cfg.train.batch_size // (ranks * cfg.train.grad_accum))
    forward_backward, step, params, trainable, largest = _traced_step(cfg, rows)
    grads, optimizer = trainable, 2 * trainable
    activations = forward_backward - params  # and the gradients as backward makes them
    if sharded and ranks > 1:  # each rank keeps 1/ranks of the state, and one block's parameters and gradients whole
        forward_backward += params / ranks + 2 * largest - params  # its gradients kept whole: an upper bound
        step = step / ranks + 2 * largest
        params, grads, optimizer = params / ranks + largest, grads / ranks + largest, optimizer / ranks
    return StepMemory(params, grads, optimizer, activations, max(forward_backward, step))
