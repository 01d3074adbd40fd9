"""Meta-device initialisation of a sharded model: no rank but rank 0 ever holds the whole model, and none on its
accelerator.

Rank 0 builds the model as one process would (pretrained backbones read with `from_pretrained`, the small modules
drawn from the seed) and keeps its state dict in CPU memory; every other rank builds the same structure with the
backbones' parameters on the meta device (no memory, no values; buffers such as rotary frequencies stay real). Then
on every rank:

1. `to_meta` moves the remaining parameters to meta (rank 0's values live on in its state dict);
2. the caller shards the model (FSDP2's `fully_shard`), still on meta;
3. `materialise` allocates the rank's shards on its device, puts the buffers back, and fills the shards from rank
   0's state dict, broadcast one tensor at a time, each rank keeping its shard of it.

The sharded model so equals, shard by shard, the one process's. Rank 0 reads the checkpoint files with transformers'
own loader, so the checkpoint's key renames and conversions (transformers 5) apply exactly as in one process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

FROM_RANK_0 = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Parameters registered inside the block are moved to the meta device as they are created."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def to_meta(model: nn.Module) -> None:
    """Every parameter on meta; a parameter shared by two modules (tied embeddings) stays shared."""
    moved: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and not p.is_meta:
                if id(p) not in moved:
                    moved[id(p)] = nn.Parameter(p.detach().to("meta"), requires_grad=p.requires_grad)
                module._parameters[name] = moved[id(p)]


def materialise(root: nn.Module, model: nn.Module, device: torch.device, state: dict[str, torch.Tensor]) -> None:
    """Allocate the sharded parameters of `root` (the FSDP root that holds `model`) on `device` and fill them from
    `state`, the full state dict on rank 0 ({} elsewhere); every rank must call it. The load is strict: a key that
    rank 0 lacks or has in excess fails."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    root.to_empty(device=device)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    set_model_state_dict(model, state, options=FROM_RANK_0)
