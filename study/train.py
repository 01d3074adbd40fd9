"""One training run, start to finish or resumed: `train(cfg, run_dir)`.

Every random draw is a function of (seed, step) or (world seed, index), and the checkpoint holds
model, optimizer, scheduler, RNG and the log accumulators, so a run interrupted and resumed ends
with exactly the weights and metrics of one that never stopped.

Several ranks (torchrun; see study/distributed.py) and micro-batches (`train.grad_accum`) split the
same global batch into shards of batch_size / (ranks x grad_accum) rows, rank r taking shards
r x grad_accum ... Each loss is a mean over its own units (caption: non-pad next tokens; semantic and
pixel: generation positions), so a shard's loss is weighted by its share of the global batch's units:
the shards' weighted losses, and their gradients, add up to those of the whole batch, and a 2-rank run
matches the 1-rank one within float rounding. Masks are drawn for the global batch; the diffusion
head's noise is drawn per shard (same distribution, different draws). Logged losses are these global means,
summed on their device between log steps (study/step_log.py).
"""

from __future__ import annotations

import errno
import functools
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from study import distributed, upstream
from study.checkpoint import Checkpointer
from study.config import RunConfig
from study.data.loader import Batch, training_stream
from study.distributed import Ranks
from study.evaluate import evaluate
from study.inputs import check_inputs
from study.masking import sample_mask
from study.model import meta_init
from study.model.flops import train_flops_per_sample
from study.model.unified import UnifiedModel
from study.objectives import compute_losses, unit_counts
from study.preemption import Preempted, Preemption, pass_on
from study.runstore import RunStore
from study.step_log import DeviceLog, NonFinite

LOSS_WEIGHTS = {"caption": "understanding_weight", "semantic": "semantic_weight", "pixel": "pixel_weight"}


class TrainingFailed(Exception):
    """The run stopped with status failed (non-finite loss, a full disk); the reason is in status.json."""


@dataclass
class Interrupt:
    """Test hook: stop (as if killed) right after the checkpoint of this step is written."""

    after_step: int


def step_generator(seed: int, step: int, stream: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device).manual_seed((seed * 1_000_003 + step) * 7 + stream)


def build_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = bool(params) and params[0].is_cuda  # one kernel, no host reads; CPU keeps foreach (its numerics)
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(0.9, 0.95), foreach=not fused, fused=fused or None)


def lr_factor(step: int, cfg: RunConfig) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio at the last step."""
    t, total, warmup = cfg.train, cfg.steps, cfg.warmup
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Progress:
    """A progress bar on a terminal, plain log lines otherwise."""

    def __init__(self, total: int, every: int):
        self.total, self.every, self.tty = total, every, sys.stderr.isatty()

    def update(self, step: int, record: dict) -> None:
        text = f"step {step}/{self.total} loss {record['loss/total']:.4f} {record['samples_per_s']:.0f} samples/s"
        if self.tty:
            filled = int(30 * step / self.total)
            print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text}", end="", file=sys.stderr, flush=True)
            if step == self.total:
                print(file=sys.stderr)
        elif step % (self.every * 10) == 0 or step == self.total:
            print(text, file=sys.stderr, flush=True)


def _autocast(cfg: RunConfig, device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")


class LossModule(nn.Module):
    """The losses as one forward: what DDP and FSDP wrap (a DDP wrapper would hide the model's methods)."""

    def __init__(self, model: UnifiedModel, cfg: RunConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, images: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
                task: Callable[[UnifiedModel], dict] | None = None) -> dict:
        """The losses of a batch; or, given `task`, `task(model)` (an evaluation run through the root's forward,
        see `distributed.call_in_root`)."""
        if task is not None:
            return task(self.model)
        return compute_losses(self.model, self.cfg, images, tokens, mask, generator)


def weighted_losses(losses: dict[str, torch.Tensor], shares: dict[str, float],
                    cfg: RunConfig) -> dict[str, torch.Tensor]:
    """Each loss times its shard's share of the batch's units, and 'total', their objective-weighted sum."""
    out = {k: v * shares[k] for k, v in losses.items() if k != "total"}
    out["total"] = sum(getattr(cfg.objective, LOSS_WEIGHTS[k]) * v for k, v in out.items())
    return out


def _to(device: torch.device, *tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [None if t is None else t.to(device, non_blocking=True) for t in tensors]


def _rank_rows(cfg: RunConfig, ranks: Ranks, batch: Batch,
               mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """This rank's images, tokens and mask rows. World batches are the global batch on every rank; shard
    batches are this rank's already (batch_size / ranks samples, fewer after a corrupt one). The mask is
    drawn for the global batch, each rank taking its block."""
    per_rank = cfg.train.batch_size // ranks.world
    start = ranks.rank * per_rank
    images, tokens = batch.images, batch.tokens
    if cfg.data.source != "shards":
        images, tokens = images[start:start + per_rank], tokens[start:start + per_rank]
    return images, tokens, None if mask is None else mask[start:start + images.shape[0]]


def _train_step(loss_fn: nn.Module, model: UnifiedModel, cfg: RunConfig, ranks: Ranks, batch: Batch, step: int,
                flops_per_sample: Callable[[int], float],
                nan_at_step: int | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Forward and backward of this rank's micro-batches; the step's global mean losses and its global token and
    FLOP counts, as tensors not read back to the host."""
    gen = step_generator(cfg.train.seed, step)
    mask = sample_mask(cfg.masking, cfg.train.batch_size, model.num_visual, gen)
    images, tokens, mask = _rank_rows(cfg, ranks, batch, mask)
    n, accum = images.shape[0], cfg.train.grad_accum
    bounds = [n * i // accum for i in range(accum + 1)]
    parts = [slice(bounds[i], bounds[i + 1]) for i in range(accum)]
    units = [unit_counts(model, cfg, tokens[part], None if mask is None else mask[part]) for part in parts]
    local = {k: sum(u[k] for u in units) for k in units[0]} | {
        "tokens": (tokens != model.pad_id).sum() + model.num_visual * n,
        "flops": torch.tensor(n * flops_per_sample(tokens.shape[1]), dtype=torch.float64)}  # from shapes
    totals = distributed.global_sums(local, ranks)
    sums: dict[str, torch.Tensor] = {}
    for micro, part in enumerate(parts):
        shard = ranks.rank * accum + micro
        shard_mask = None if mask is None else mask[part]
        # float64 division rounded to float32: what a host float times a float32 loss computed before
        shares = {k: (units[micro][k] / totals[k].clamp(min=1)).float() for k in units[micro]}
        # a single CPU shard continues the mask generator, as the single-process run always did
        noise = gen if ranks.world * accum == 1 and ranks.device.type == "cpu" else \
            step_generator(cfg.train.seed, step, 1 + shard, ranks.device)
        with distributed.gradient_sync(loss_fn, sync=micro == accum - 1):
            with _autocast(cfg, ranks.device):
                inputs = _to(ranks.device, images[part], tokens[part], shard_mask)
                if images.dtype == torch.uint8:  # shard batches travel as bytes, become floats on the device
                    inputs[0] = inputs[0].float().div_(255)
                losses = weighted_losses(loss_fn(*inputs, noise), shares, cfg)
            if nan_at_step == step + 1:  # fault injection (tests)
                losses["total"] = losses["total"] * float("nan")
            (losses["total"] * ranks.world).backward()  # DDP and FSDP average gradients over ranks
        for k, v in losses.items():
            sums[k] = sums.get(k, 0) + v.detach()
    return distributed.global_sums(sums, ranks), {k: totals[k] for k in ("tokens", "flops")}


def build_model(cfg: RunConfig, runs_dir: Path, weights: bool = True) -> UnifiedModel:
    """The run's model, its upstream references (`run:<id>`) read from the runs directory (`weights`: see
    UnifiedModel)."""
    return UnifiedModel(upstream.resolve(cfg, runs_dir), weights)


def _build_parallel(cfg: RunConfig, runs_dir: Path, ranks: Ranks) -> tuple[UnifiedModel, nn.Module]:
    """The run's model and the module to call for its losses, laid out on the ranks. Pretrained backbones sharded by
    FSDP are initialised on the meta device and filled from rank 0's model (study/model/meta_init.py): no rank
    holds the whole model on its device; anything else is built whole and moved to the device."""
    if not distributed.meta_initialised(cfg, ranks):
        model = build_model(cfg, runs_dir).to(ranks.device)
        return model, distributed.parallelize(LossModule(model, cfg), model, cfg, ranks)
    model = build_model(cfg, runs_dir, weights=ranks.main)
    state = model.state_dict() if ranks.main else {}  # rank 0's values outlive its parameters' move to meta
    meta_init.to_meta(model)
    loss_fn = distributed.parallelize(LossModule(model, cfg), model, cfg, ranks)
    meta_init.materialise(loss_fn, model, ranks.device, state)
    return model, loss_fn


def _evaluate(store: RunStore, model: UnifiedModel, loss_fn: nn.Module, cfg: RunConfig, ranks: Ranks, step: int,
              final: bool) -> dict:
    """Evaluate and let rank 0 write the record; rank 0's record ({} on the others). Every rank evaluates on its
    device, in the run's precision, on the live model (an FSDP-sharded one gathered block by block, as in training):
    nothing is gathered whole or rebuilt (study/evaluate.py)."""
    record = {"step": step, "samples_seen": step * cfg.train.batch_size, "final": final}

    def task(live: UnifiedModel) -> dict:
        return evaluate(live, cfg, step, final=final, run_dir=store.path if ranks.main else None, rank=ranks.rank,
                        world=ranks.world)

    with _autocast(cfg, ranks.device):
        record.update(distributed.call_in_root(loss_fn, model, task))
    if ranks.main:
        store.append("eval.jsonl", record)
    distributed.barrier(ranks)
    return record if ranks.main else {}


def train(cfg: RunConfig, run_dir: Path | str, interrupt: Interrupt | None = None, quiet: bool = False,
          nan_at_step: int | None = None) -> Path:
    """Run (or resume, or skip if complete) the run of `cfg` in `run_dir`; returns the directory.

    Under torchrun (or any env:// rendezvous) every rank calls this; rank 0 writes the run files.
    An OSError (a full disk, a lost mount) stops the run with status failed and the error as its reason,
    raised as TrainingFailed; the checkpoints written before it are untouched, so a resume continues.
    `nan_at_step` is a test hook: the loss of that step becomes NaN, as in a diverging run.
    """
    if cfg.objective.task != "vlm":  # an encoder-pretraining stage
        from study.pretrain.run import train_stage

        return train_stage(cfg, run_dir, interrupt, quiet, nan_at_step)
    check_inputs(cfg)  # a missing backbone or shard directory fails before anything is written
    upstream.resolve(cfg, Path(run_dir).parent)  # so does an upstream run that has not completed
    ranks, started = distributed.setup(cfg)
    store = RunStore(run_dir) if ranks.main else distributed.FollowerStore(run_dir)
    stopped = None
    try:
        with Preemption() as preemption:
            return _train(store, cfg, ranks, interrupt, quiet, nan_at_step, preemption)
    except Preempted as e:
        stopped = e
    except OSError as e:
        reason = f"stopped by an OS error ({errno.errorcode.get(e.errno or 0, 'no errno')}): {e}"
        if (store.path / "config.yaml").exists():
            try:
                where = {k: v for k, v in store.status().items() if k in ("step", "total_steps")}
                store.write_status("failed", reason=reason, **where)
            except OSError:  # the disk refuses even the status file: the caller still gets the reason
                pass
        raise TrainingFailed(reason) from e
    finally:
        distributed.teardown(started)
    pass_on(stopped)  # reached only when preempted; does not return


def already_complete(store: RunStore, cfg: RunConfig) -> bool:
    """True for a completed run; otherwise the run's directory is cleaned of partial writes and torch set up
    (threads, the seed) for a start or a resume."""
    if store.status()["state"] == "completed":
        return True
    store.remove_partial_writes()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    return False


def _train(store: RunStore, cfg: RunConfig, ranks: Ranks, interrupt: Interrupt | None, quiet: bool,
           nan_at_step: int | None, preemption: Preemption) -> Path:
    store.init(cfg)
    distributed.barrier(ranks)  # the run directory exists before any rank reads it
    if already_complete(store, cfg):
        return store.path
    if ranks.main:
        upstream.pin(cfg, store.path)  # the weights it trains on are the ones it started with
    model, loss_fn = _build_parallel(cfg, store.path.parent, ranks)
    opt = build_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    checkpointer = Checkpointer(store, upstream.resolve(cfg, store.path.parent), ranks, model, opt, sched)
    restored = checkpointer.restore()
    start, acc = restored or (0, {"sum": {}, "count": 0, "tokens": 0, "flops": 0.0})
    for name in ("metrics.jsonl", "eval.jsonl"):  # records after the checkpoint are redone; all, without one
        store.truncate_records(name, start if restored is not None else -1)
    store.write_status("running", step=start, total_steps=cfg.steps, world_size=ranks.world)
    if start == 0:
        _evaluate(store, model, loss_fn, cfg, ranks, 0, final=False)  # the randomly initialised floor
    model.train()
    stream = training_stream(cfg, start, store.path)
    flops_per_sample = functools.cache(lambda caption_tokens: train_flops_per_sample(cfg, caption_tokens))
    progress = None if quiet or not ranks.main else Progress(cfg.steps, cfg.train.log_every)
    tick, device_log = time.perf_counter(), DeviceLog()
    try:
        for step, batch in zip(range(start, cfg.steps), stream, strict=False):
            values, counts = _train_step(loss_fn, model, cfg, ranks, batch, step, flops_per_sample, nan_at_step)
            if cfg.train.grad_clip > 0:
                values["grad_norm"] = distributed.clip_grad_norm(model, cfg.train.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            model.update_ema(cfg.objective.target_ema)
            done = step + 1
            device_log.add(values, counts, done)
            evaluating = cfg.eval.every and done % cfg.eval.every == 0 and done < cfg.steps
            saving = cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0 and done < cfg.steps
            if at_log_step(cfg, done) or evaluating or saving:  # the step's only host reads
                _flush(device_log, acc, store, cfg)
            tick = count_step(store, cfg, acc, done, sched.get_last_lr()[0], tick, progress)
            if evaluating:
                _evaluate(store, model, loss_fn, cfg, ranks, done, final=False)
                model.train()
            if saving:
                checkpointer.save(done, acc)
                store.write_status("running", step=done, total_steps=cfg.steps, world_size=ranks.world)
                if interrupt and interrupt.after_step == done:
                    checkpointer.wait()
                    return store.path
            signum = preemption.requested(ranks.world, ranks.device, done % cfg.train.log_every == 0)
            if signum and done < cfg.steps:
                _flush(device_log, acc, store, cfg)
                checkpointer.save(done, acc, background=False)
                store.write_status("running", step=done, total_steps=cfg.steps, world_size=ranks.world,
                                   preempted=signal.Signals(signum).name)
                raise Preempted(signum, done)
    finally:
        stream.close()
    final = _evaluate(store, model, loss_fn, cfg, ranks, cfg.steps, final=True)
    checkpointer.save(cfg.steps, acc, background=False)
    store.write_status("completed", step=cfg.steps, total_steps=cfg.steps, world_size=ranks.world,
                       final={k: v for k, v in final.items() if isinstance(v, (int, float))})
    return store.path


def log_step(store: RunStore, cfg: RunConfig, acc: dict, values: dict[str, float], tokens: int, flops: float,
             done: int, lr: float, tick: float, progress: Progress | None) -> float:
    """Add a step's losses and counts (host numbers) to the log accumulators, then `count_step`."""
    for k, v in values.items():
        acc["sum"][k] = acc["sum"].get(k, 0.0) + v
    acc["tokens"] += tokens
    acc["flops"] += flops
    return count_step(store, cfg, acc, done, lr, tick, progress)


def count_step(store: RunStore, cfg: RunConfig, acc: dict, done: int, lr: float, tick: float,
               progress: Progress | None) -> float:
    """Count a step into the log interval; at a log step, append the metrics record (and show progress) and start
    a new interval. Returns the interval's start time."""
    acc["count"] += 1
    if not at_log_step(cfg, done):
        return tick
    now = time.perf_counter()
    record = metrics_record(cfg, done, acc, lr, now - tick)
    store.append("metrics.jsonl", record)
    if progress:
        progress.update(done, record)
    acc["sum"], acc["count"] = {}, 0
    return now


def at_log_step(cfg: RunConfig, done: int) -> bool:
    return done % cfg.train.log_every == 0 or done == cfg.steps


def _flush(device_log: DeviceLog, acc: dict, store: RunStore, cfg: RunConfig) -> None:
    """Read the step log into the accumulators; a non-finite loss since the last read fails the run at its step."""
    try:
        device_log.flush(acc)
    except NonFinite as e:
        store.write_status("failed", step=e.step, total_steps=cfg.steps, reason=e.reason)
        raise TrainingFailed(e.reason) from None


def metrics_record(cfg: RunConfig, step: int, acc: dict, lr: float, seconds: float) -> dict:
    n = max(1, acc["count"])
    samples = step * cfg.train.batch_size
    record = {"step": step, "samples_seen": samples, "tokens_seen": acc["tokens"],
              "flops": acc["flops"], "lr": lr}
    record.update({f"loss/{k}" if k != "grad_norm" else k: v / n for k, v in acc["sum"].items()})
    record["samples_per_s"] = n * cfg.train.batch_size / max(seconds, 1e-9)
    return record
