"""Several processes training one run: torchrun-style env:// rendezvous, DDP or FSDP2, full state dicts.

Every rank reads RANK, WORLD_SIZE and LOCAL_RANK (MASTER_ADDR/PORT for the rendezvous), as torchrun and
the Slurm and Ray backends set them; without them the run is one process and nothing here does anything. Only
rank 0 writes run files; checkpoints are sharded (each rank its own) or full (gathered to rank 0), and either
resumes on any number of ranks (study/checkpoint.py).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint

from study.config import RunConfig
from study.errors import UserError
from study.model.layers import check_attention_kernel

BLOCK_LISTS = ("blocks", "layers", "layer")  # names of the block lists: ours, transformers' models
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


@dataclass(frozen=True)
class Ranks:
    """This process's rank, the number of ranks and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


# what the communication libraries say when another rank of the group is gone (its process or node died)
LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "NCCL communicator was aborted")


def peer_lost(error: BaseException) -> bool:
    """Whether `error`, in a process of a group of several ranks, is a collective failing because another rank is
    gone, rather than this rank failing: the run is intact, and resumes from its last checkpoint once the group is
    whole again."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return False
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, dist.DistNetworkError) or any(text in str(seen) for text in LOST_PEER):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def backend() -> str:
    """The process-group backend: gloo for CPU tensors, NCCL for CUDA ones where a GPU exists."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`train.device` as a device; auto is this rank's GPU when CUDA is available."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("config key 'train.device': cuda asked for but no CUDA device is available; use cpu or auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def strategy(cfg: RunConfig) -> str:
    """`train.parallel` resolved: auto is fsdp for pretrained backbones (rarely small enough to replicate), ddp for
    the miniature."""
    if cfg.train.parallel == "auto":
        return "fsdp" if cfg.model.backbone == "hf" else "ddp"
    return cfg.train.parallel


def meta_initialised(cfg: RunConfig, ranks: Ranks) -> bool:
    """Whether the model is built on the meta device and loaded once sharded: pretrained backbones under FSDP."""
    return cfg.model.backbone == "hf" and ranks.world > 1 and strategy(cfg) == "fsdp"


def check(cfg: RunConfig, world: int, device: torch.device) -> None:
    """What only the runtime can check (ranks, device), as one-line errors before anything is written."""
    t = cfg.train
    if world > 1 and cfg.objective.task != "vlm":
        raise UserError(f"config key 'objective.task': {cfg.objective.task} (an encoder-pretraining stage) trains in "
                        f"one process but WORLD_SIZE is {world}")
    if world > 1 and strategy(cfg) == "none":
        raise UserError(f"config key 'train.parallel': none trains one process but WORLD_SIZE is {world}; "
                        "use ddp or fsdp")
    for key in ("num_images", "probe_images"):  # each rank evaluates a share of at least one image
        if cfg.data.source == "world" and getattr(cfg.eval, key) < world:
            raise UserError(f"config key 'eval.{key}': {getattr(cfg.eval, key)} held-out images cannot be shared "
                            f"by {world} ranks")
    if world > 1 and strategy(cfg) == "fsdp" and world % t.fsdp_replicas:
        raise UserError(f"config key 'train.fsdp_replicas': {t.fsdp_replicas} replicas do not divide the {world} "
                        "ranks")
    if t.batch_size % (world * t.grad_accum):
        raise UserError(f"config key 'train.batch_size': {t.batch_size} is not divisible by {world} ranks x "
                        f"train.grad_accum {t.grad_accum}")
    check_attention_kernel(cfg.model.attention, device)


def setup(cfg: RunConfig) -> tuple[Ranks, bool]:
    """This process's rank, world size and device; joins the process group unless the caller already did.
    Returns the ranks and whether this call started the group (and so must end it)."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    device = resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    check(cfg, world, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    started = world > 1 and not dist.is_initialized()
    if started:
        dist.init_process_group(backend(), init_method="env://", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=cfg.train.dist_timeout_min))
    return Ranks(rank, world, device), started


def teardown(started: bool) -> None:
    """Leave the process group together: a rank that destroys it while another still has collectives in
    flight can abort at exit."""
    if started and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if ranks.world > 1:
        dist.barrier()


def global_sums(values: dict[str, torch.Tensor], ranks: Ranks) -> dict[str, torch.Tensor]:
    """Each scalar summed over ranks, as float64 tensors on the values' device (counts stay exact); nothing is read
    back to the host. Several ranks: one all-reduce of the stacked values."""
    stacked = torch.stack([v.detach().double() for v in values.values()])
    if ranks.world > 1:
        dist.all_reduce(stacked)
    return dict(zip(values, stacked.unbind(), strict=True))


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of the vision encoder and the LLM (ModuleLists named in BLOCK_LISTS)."""
    return [block for part in (model.encoder, model.llm) for name, module in part.named_modules()
            if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in BLOCK_LISTS for block in module]


def parallelize(loss_fn: nn.Module, model: nn.Module, cfg: RunConfig, ranks: Ranks) -> nn.Module:
    """Per block: activation checkpointing, then torch.compile; across ranks: DDP, or FSDP2 with each block
    its own group and `loss_fn` the root (the losses use embeddings and heads outside `model.forward`, so
    they are gathered by the root's forward). Returns the module to call for the losses."""
    t = cfg.train
    for block in transformer_blocks(model):
        if t.activation_checkpointing:  # the forward is recomputed in backward; parameter names unchanged
            block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
        if t.compile:
            block.compile()
    if ranks.world == 1:
        return loss_fn
    if strategy(cfg) == "fsdp":
        policy, mesh = mixed_precision(cfg), device_mesh(cfg, ranks)
        for block in transformer_blocks(model):
            fully_shard(block, mesh=mesh, mp_policy=policy)
        return fully_shard(loss_fn, mesh=mesh, mp_policy=policy)
    device_ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    # a loss may leave parameters unused in a step (the pixel head of a shard with nothing masked)
    return DistributedDataParallel(loss_fn, device_ids=device_ids, find_unused_parameters=True)


def call_in_root(loss_fn: nn.Module, model: nn.Module, task: Callable[[nn.Module], Any]) -> Any:
    """`task(model)`, run inside the root module's forward under FSDP2 (which gathers the root unit's own
    parameters, the embeddings, projector and heads, and initialises on the first forward); plainly otherwise.
    Every rank must call it alike."""
    if isinstance(loss_fn, FSDPModule):
        return loss_fn(task=task)
    return task(model)


def device_mesh(cfg: RunConfig, ranks: Ranks) -> DeviceMesh | None:
    """FSDP's mesh: None (every rank one shard group) or, with train.fsdp_replicas > 1, a 2-D mesh of replicas x
    shards in which consecutive ranks (one node's GPUs under torchrun and Slurm) share a replica."""
    replicas = cfg.train.fsdp_replicas
    if replicas == 1:
        return None
    return init_device_mesh(ranks.device.type, (replicas, ranks.world // replicas),
                            mesh_dim_names=("replicate", "shard"))


def mixed_precision(cfg: RunConfig) -> MixedPrecisionPolicy:
    """FSDP2's policy: under bf16, parameters all-gathered and computed in bf16, gradients reduced in fp32 (the
    sharded fp32 parameters stay the optimizer's master copy); under fp32, everything in fp32."""
    if cfg.train.precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def gradient_sync(loss_fn: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """The gradient reduction of a micro-batch; `sync` on the last of a step. DDP reduces on the last only (it holds
    full gradients anyway). FSDP reduce-scatters every micro-batch, so a rank never keeps more than its fp32
    gradient shard (skipping it would keep every unsharded gradient, upcast to fp32, until the last); under hybrid
    sharding the all-reduce across replicas waits for the last micro-batch."""
    if isinstance(loss_fn, FSDPModule):
        loss_fn.set_requires_all_reduce(sync)
    if isinstance(loss_fn, DistributedDataParallel) and not sync:
        return loss_fn.no_sync()
    return contextlib.nullcontext()


def clip_grad_norm(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm; the norm before clipping, a tensor on the device (read when logged)."""
    norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], max_norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def full_model_state(model: nn.Module) -> dict:
    """The full model state dict on rank 0 (empty elsewhere); every rank must call it."""
    return get_model_state_dict(model, options=FULL)


def full_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """The full optimizer state dict, parameters by name, on rank 0 (empty elsewhere); every rank must call it."""
    return get_optimizer_state_dict(model, opt, options=FULL)


def load_state(model: nn.Module, opt: torch.optim.Optimizer, model_state: dict, opt_state: dict) -> None:
    """Load full state dicts on every rank (each keeps its shard). Parameters that never had a gradient have
    no optimizer state, hence strict=False for the optimizer."""
    set_model_state_dict(model, model_state, options=StateDictOptions(full_state_dict=True))
    if all(isinstance(i, int) for group in opt_state["param_groups"] for i in group["params"]):  # older format
        opt.load_state_dict(opt_state)
        return
    set_optimizer_state_dict(model, opt, opt_state, options=StateDictOptions(full_state_dict=True, strict=False))
