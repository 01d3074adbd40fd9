"""One training run, start to finish or resumed: `train(cfg, run_dir)`.

Every random draw is a function of (seed, step) or (world seed, index), and the checkpoint holds
model, optimizer, scheduler, RNG and the log accumulators, so a run interrupted and resumed ends
with exactly the weights and metrics of one that never stopped.
"""

from __future__ import annotations

import errno
import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from study.config import RunConfig
from study.data.loader import TrainStream
from study.data.tokenizer import PAD_ID
from study.evaluate import evaluate
from study.masking import sample_mask
from study.model.flops import train_flops_per_sample
from study.model.unified import UnifiedModel
from study.objectives import compute_losses
from study.runstore import RunStore


class TrainingFailed(Exception):
    """The run stopped with status failed (non-finite loss, a full disk); the reason is in status.json."""


@dataclass
class Interrupt:
    """Test hook: stop (as if killed) right after the checkpoint of this step is written."""

    after_step: int


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 7 + stream)


def build_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(0.9, 0.95), foreach=True)


def lr_factor(step: int, cfg: RunConfig) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio at the last step."""
    t, total = cfg.train, cfg.steps
    if step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    progress = (step - t.warmup_steps) / max(1, total - t.warmup_steps)
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


def _autocast(cfg: RunConfig) -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")


def _checkpoint_state(model, opt, sched, step: int, acc: dict) -> dict:
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "step": step, "rng": torch.get_rng_state(), "accumulators": acc}


def _evaluate(store: RunStore, model: UnifiedModel, cfg: RunConfig, step: int, final: bool) -> dict:
    record = {"step": step, "samples_seen": step * cfg.train.batch_size, "final": final}
    record.update(evaluate(model, cfg, step, final=final, run_dir=store.path))
    store.append("eval.jsonl", record)
    return record


def train(cfg: RunConfig, run_dir: Path | str, interrupt: Interrupt | None = None, quiet: bool = False,
          nan_at_step: int | None = None) -> Path:
    """Run (or resume, or skip if complete) the run of `cfg` in `run_dir`; returns the directory.

    An OSError (a full disk, a lost mount) stops the run with status failed and the error as its reason,
    raised as TrainingFailed; the checkpoints written before it are untouched, so a resume continues.
    `nan_at_step` is a test hook: the loss of that step becomes NaN, as in a diverging run.
    """
    store = RunStore(run_dir)
    try:
        return _train(store, cfg, interrupt, quiet, nan_at_step)
    except OSError as e:
        reason = f"stopped by an OS error ({errno.errorcode.get(e.errno or 0, 'no errno')}): {e}"
        if (store.path / "config.yaml").exists():
            try:
                where = {k: v for k, v in store.status().items() if k in ("step", "total_steps")}
                store.write_status("failed", reason=reason, **where)
            except OSError:  # the disk refuses even the status file: the caller still gets the reason
                pass
        raise TrainingFailed(reason) from e


def _train(store: RunStore, cfg: RunConfig, interrupt: Interrupt | None, quiet: bool,
           nan_at_step: int | None) -> Path:
    store.init(cfg)
    if store.status()["state"] == "completed":
        return store.path
    store.remove_partial_writes()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    model = UnifiedModel(cfg)
    opt = build_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    start, acc = 0, {"sum": {}, "count": 0, "tokens": 0, "flops": 0.0}
    state = store.load_latest_checkpoint()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, acc = state["step"], state["accumulators"]
    for name in ("metrics.jsonl", "eval.jsonl"):  # records after the checkpoint are redone; all, without one
        store.truncate_records(name, start if state is not None else -1)
    store.write_status("running", step=start, total_steps=cfg.steps)
    if start == 0:
        _evaluate(store, model, cfg, 0, final=False)  # the randomly initialised floor
    model.train()
    stream = TrainStream(cfg, start)
    flops_per_sample = functools.cache(lambda caption_tokens: train_flops_per_sample(cfg, caption_tokens))
    progress = None if quiet else Progress(cfg.steps, cfg.train.log_every)
    tick = time.perf_counter()
    try:
        for step, batch in zip(range(start, cfg.steps), stream, strict=False):
            gen = step_generator(cfg.train.seed, step)
            mask = sample_mask(cfg.masking, batch.images.shape[0], model.num_visual, gen)
            with _autocast(cfg):
                losses = compute_losses(model, cfg, batch.images, batch.tokens, mask, gen)
            if nan_at_step == step + 1:  # fault injection (tests)
                losses["total"] = losses["total"] * float("nan")
            values = {k: v.item() for k, v in losses.items()}
            if not all(math.isfinite(v) for v in values.values()):
                bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
                reason = f"non-finite loss at step {step + 1}: {bad}"
                store.write_status("failed", step=step + 1, total_steps=cfg.steps, reason=reason)
                raise TrainingFailed(reason)
            losses["total"].backward()
            if cfg.train.grad_clip > 0:
                values["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip).item()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            model.update_ema(cfg.objective.target_ema)
            for k, v in values.items():
                acc["sum"][k] = acc["sum"].get(k, 0.0) + v
            acc["count"] += 1
            acc["tokens"] += int((batch.tokens != PAD_ID).sum()) + model.num_visual * batch.images.shape[0]
            acc["flops"] += batch.images.shape[0] * flops_per_sample(batch.tokens.shape[1])
            done = step + 1
            if done % cfg.train.log_every == 0 or done == cfg.steps:
                now = time.perf_counter()
                record = _metrics_record(cfg, done, acc, sched.get_last_lr()[0], now - tick)
                store.append("metrics.jsonl", record)
                if progress:
                    progress.update(done, record)
                acc["sum"], acc["count"], tick = {}, 0, now
            if cfg.eval.every and done % cfg.eval.every == 0 and done < cfg.steps:
                _evaluate(store, model, cfg, done, final=False)
                model.train()
            if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0 and done < cfg.steps:
                store.save_checkpoint(done, _checkpoint_state(model, opt, sched, done, acc))
                store.write_status("running", step=done, total_steps=cfg.steps)
                if interrupt and interrupt.after_step == done:
                    return store.path
    finally:
        stream.close()
    final = _evaluate(store, model, cfg, cfg.steps, final=True)
    store.save_checkpoint(cfg.steps, _checkpoint_state(model, opt, sched, cfg.steps, acc))
    store.write_status("completed", step=cfg.steps, total_steps=cfg.steps,
                       final={k: v for k, v in final.items() if isinstance(v, (int, float))})
    return store.path


def _metrics_record(cfg: RunConfig, step: int, acc: dict, lr: float, seconds: float) -> dict:
    n = max(1, acc["count"])
    samples = step * cfg.train.batch_size
    record = {"step": step, "samples_seen": samples, "tokens_seen": acc["tokens"],
              "flops": acc["flops"], "lr": lr}
    record.update({f"loss/{k}" if k != "grad_norm" else k: v / n for k, v in acc["sum"].items()})
    record["samples_per_s"] = n * cfg.train.batch_size / max(seconds, 1e-9)
    return record
