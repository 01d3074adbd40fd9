"""The training loop every run shares, VLM runs and encoder-pretraining stages alike: start or resume, steps,
logging, evaluations, checkpoints, preemption and the run's status.

A `Trainee` says what one step computes and how the run is evaluated; the loop does everything else, the same way
for both: the step's numbers stay on their device until a log, evaluation or checkpoint step (study/step_log.py),
the checkpointer saves and restores all a resume needs (study/checkpoint.py), a preemption signal writes a
checkpoint at the next step boundary (study/preemption.py), and `until_step` stops a run right after the checkpoint
of that step, to be resumed later (a search segment). Every draw is a function of (seed, step), so a run
interrupted and resumed ends with exactly the weights and metrics of one that never stopped.

Faults for tests (a loss made non-finite at a step) come in through `inject`, a seam the tests own.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from study import distributed
from study.checkpoint import Checkpointer
from study.config import RunConfig
from study.distributed import Ranks
from study.preemption import Preempted, Preemption
from study.runstore import RunStore
from study.step_log import DeviceLog, NonFinite


class TrainingFailed(Exception):
    """The run stopped with status failed (non-finite loss, a full disk); the reason is in status.json."""


class Trainee(Protocol):
    """What a run trains: `model` is what the optimizer updates and the checkpointer saves."""

    model: nn.Module

    def step(self, step: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Forward and backward of training step `step` (counted from 0): the global mean losses, and the step's
        'tokens' and 'flops', as tensors on the device (never read back here)."""

    def after_update(self) -> None:
        """After each optimizer step (EMA targets and teachers)."""

    def evaluate(self, step: int, final: bool) -> dict:
        """The metrics of an evaluation at `step` (every rank calls it; rank 0's are recorded)."""

    def completed(self) -> dict:
        """Status fields the completed run adds (an upstream run's exported weights)."""

    def close(self) -> None:
        """Release the data stream."""


@dataclass(frozen=True)
class Faults:
    """Faults a test injects: the loss of step `nan_at_step` (counted from 1) becomes NaN, as in a diverging run;
    `signal_at_step` (step, signal) sends the signal to this process during that step (counted from 1), after its
    forward and backward, as a scheduler's warning would arrive."""

    nan_at_step: int | None = None
    signal_at_step: tuple[int, int] | None = None


_FAULTS: contextvars.ContextVar[Faults | None] = contextvars.ContextVar("faults", default=None)


@contextlib.contextmanager
def inject(faults: Faults) -> Iterator[None]:
    """Train with `faults` inside this block (tests, and the sweeps' fault files)."""
    token = _FAULTS.set(faults)
    try:
        yield
    finally:
        _FAULTS.reset(token)


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, weight decay on matrices only (fused on CUDA)."""
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


def at_log_step(cfg: RunConfig, done: int) -> bool:
    """Whether step `done` writes a metrics record (every `log_every` steps and the last)."""
    return done % cfg.train.log_every == 0 or done == cfg.steps


def metrics_record(cfg: RunConfig, step: int, acc: dict, lr: float, seconds: float) -> dict:
    """A metrics record of the steps since the last one: the mean losses, counters and throughput."""
    n = max(1, acc["count"])
    samples = step * cfg.train.batch_size
    record = {"step": step, "samples_seen": samples, "tokens_seen": acc["tokens"],
              "flops": acc["flops"], "lr": lr}
    record.update({f"loss/{k}" if k != "grad_norm" else k: v / n for k, v in acc["sum"].items()})
    record["samples_per_s"] = n * cfg.train.batch_size / max(seconds, 1e-9)
    return record


class Loop:
    """One run's loop over `trainee`, on `ranks`; `cfg` is the run's config with its upstream references resolved
    (`digests`: the sha256 of each upstream file, by config key)."""

    def __init__(self, store: RunStore, cfg: RunConfig, ranks: Ranks, trainee: Trainee,
                 digests: dict[str, str] | None = None):
        self.store, self.cfg, self.ranks, self.trainee = store, cfg, ranks, trainee
        self.opt = build_optimizer(trainee.model, cfg)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg))
        self.checkpointer = Checkpointer(store, cfg, ranks, trainee.model, self.opt, self.sched, digests)
        self.device_log = DeviceLog()

    def evaluate(self, step: int, final: bool) -> dict:
        """Evaluate on every rank; rank 0 writes the record. Rank 0's record ({} on the others)."""
        record = {"step": step, "samples_seen": step * self.cfg.train.batch_size, "final": final}
        record.update(self.trainee.evaluate(step, final))
        if self.ranks.main:
            self.store.append("eval.jsonl", record)
        distributed.barrier(self.ranks)
        return record if self.ranks.main else {}

    def _status(self, state: str, step: int, **fields: object) -> None:
        self.store.write_status(state, step=step, total_steps=self.cfg.steps, world_size=self.ranks.world, **fields)

    def _flush(self, acc: dict) -> None:
        """Read the step log into the accumulators; a non-finite loss since the last read fails the run at its step."""
        try:
            self.device_log.flush(acc)
        except NonFinite as e:
            self.store.write_status("failed", step=e.step, total_steps=self.cfg.steps, reason=e.reason)
            raise TrainingFailed(e.reason) from None

    def _log(self, acc: dict, done: int, tick: float, progress: Progress | None) -> float:
        """Count a step into the log interval; at a log step, append the metrics record (and show progress) and
        start a new interval. Returns the interval's start time."""
        acc["count"] += 1
        if not at_log_step(self.cfg, done):
            return tick
        now = time.perf_counter()
        record = metrics_record(self.cfg, done, acc, self.sched.get_last_lr()[0], now - tick)
        self.store.append("metrics.jsonl", record)
        if progress:
            progress.update(done, record)
        acc["sum"], acc["count"] = {}, 0
        return now

    def run(self, preemption: Preemption, until_step: int | None = None, quiet: bool = False) -> None:
        """Train from the newest checkpoint (or from the start) to the end, or to the checkpoint of `until_step`;
        a preemption signal raises Preempted after the checkpoint of the step it stopped at."""
        cfg, ranks, store, trainee = self.cfg, self.ranks, self.store, self.trainee
        restored = self.checkpointer.restore()
        start, acc = restored or (0, {"sum": {}, "count": 0, "tokens": 0, "flops": 0.0})
        for name in ("metrics.jsonl", "eval.jsonl"):  # records after the checkpoint are redone; all, without one
            store.truncate_records(name, start if restored is not None else -1)
        if restored is not None and ranks.main:  # in the job log, where a requeued run shows where it went on
            print(f"resumed from the checkpoint of step {start}", file=sys.stderr, flush=True)
        self._status("running", start)
        if start == 0:
            self.evaluate(0, final=False)  # the randomly initialised floor
        trainee.model.train()
        progress = None if quiet or not ranks.main else Progress(cfg.steps, cfg.train.log_every)
        faults, tick = _FAULTS.get() or Faults(), time.perf_counter()
        try:
            for step in range(start, cfg.steps):
                values, counts = trainee.step(step)
                if faults.nan_at_step == step + 1:
                    values["total"] = values["total"] * float("nan")
                if faults.signal_at_step and faults.signal_at_step[0] == step + 1:
                    os.kill(os.getpid(), faults.signal_at_step[1])
                if cfg.train.grad_clip > 0:
                    values["grad_norm"] = distributed.clip_grad_norm(trainee.model, cfg.train.grad_clip)
                self.opt.step()
                self.sched.step()
                self.opt.zero_grad(set_to_none=True)
                trainee.after_update()
                done = step + 1
                self.device_log.add(values, counts, done)
                evaluating = cfg.eval.every and done % cfg.eval.every == 0 and done < cfg.steps
                saving = cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0 and done < cfg.steps
                if at_log_step(cfg, done) or evaluating or saving:  # the step's only host reads
                    self._flush(acc)
                tick = self._log(acc, done, tick, progress)
                if evaluating:
                    self.evaluate(done, final=False)
                    trainee.model.train()
                if saving:
                    self.checkpointer.save(done, acc)
                    self._status("running", done)
                    if until_step == done:
                        self.checkpointer.wait()
                        return
                signum = preemption.requested(ranks.world, ranks.device, done % cfg.train.log_every == 0)
                if signum and done < cfg.steps:
                    self._flush(acc)
                    self.checkpointer.save(done, acc, background=False)
                    self._status("running", done, preempted=signal.Signals(signum).name)
                    raise Preempted(signum, done)
        finally:
            trainee.close()
        final = self.evaluate(cfg.steps, final=True)
        self.checkpointer.save(cfg.steps, acc, background=False)
        self._status("completed", cfg.steps, **trainee.completed(),
                     final={k: v for k, v in final.items() if isinstance(v, (int, float))})
