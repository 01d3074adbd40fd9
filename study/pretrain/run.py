"""One encoder-pretraining run (objective.task contrastive or self_distill), start to finish or resumed.

The same run store, schedule, checkpoints and resume guarantee as a VLM run (`study.train`), in one process:
batches are world indices [PRETRAIN_START, PRETRAIN_START + D) in the order of `training_indices`, disjoint
from every VLM training range and from the held-out range. Evaluations are the stage's probes
(`study.pretrain.evaluate`), step 0 being the randomly initialised encoder.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from study import upstream
from study.config import RunConfig
from study.data.loader import make_batch, training_indices
from study.data.tokenizer import max_caption_tokens
from study.data.world import PRETRAIN_START, World
from study.model.flops import encoder_stage_flops_per_sample
from study.pretrain.evaluate import evaluate_stage
from study.pretrain.objectives import build_objective
from study.runstore import RunStore
from study.train import (
    Interrupt,
    Progress,
    TrainingFailed,
    already_complete,
    build_optimizer,
    log_step,
    lr_factor,
    step_generator,
)


def _evaluate(store: RunStore, objective: torch.nn.Module, cfg: RunConfig, step: int, final: bool) -> dict:
    record = {"step": step, "samples_seen": step * cfg.train.batch_size, "final": final}
    record.update(evaluate_stage(objective, cfg, step))
    store.append("eval.jsonl", record)
    return record


def _checkpoint(objective: torch.nn.Module, opt, sched, step: int, acc: dict) -> dict:
    return {"model": objective.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "step": step, "rng": torch.get_rng_state(), "accumulators": acc}


def train_stage(cfg: RunConfig, run_dir: Path | str, interrupt: Interrupt | None = None, quiet: bool = False,
                nan_at_step: int | None = None) -> Path:
    """Run (or resume, or skip if complete) the pretraining run of `cfg` in `run_dir`; returns the directory."""
    store = RunStore(run_dir)
    store.init(cfg)
    if already_complete(store, cfg):
        return store.path
    objective = build_objective(cfg)
    opt = build_optimizer(objective, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    start, acc = 0, {"sum": {}, "count": 0, "tokens": 0, "flops": 0.0}
    state = store.load_latest_checkpoint()
    if state is not None:
        objective.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, acc = state["step"], state["accumulators"]
    for name in ("metrics.jsonl", "eval.jsonl"):
        store.truncate_records(name, start if state is not None else -1)
    store.write_status("running", step=start, total_steps=cfg.steps, world_size=1)
    if start == 0:
        _evaluate(store, objective, cfg, 0, final=False)
    objective.train()
    world = World(cfg.data)
    per_sample = encoder_stage_flops_per_sample(cfg, max_caption_tokens(cfg.data.max_objects))
    progress = None if quiet else Progress(cfg.steps, cfg.train.log_every)
    tick = time.perf_counter()
    for step in range(start, cfg.steps):
        batch = make_batch(world, PRETRAIN_START + training_indices(cfg, step))
        losses = objective(batch.images, batch.tokens, step_generator(cfg.train.seed, step))
        if nan_at_step == step + 1:  # fault injection (tests)
            losses["total"] = losses["total"] * float("nan")
        values = {k: float(v.detach()) for k, v in losses.items()}
        if not math.isfinite(values["total"]):
            reason = f"non-finite loss at step {step + 1}: total={values['total']}"
            store.write_status("failed", step=step + 1, total_steps=cfg.steps, reason=reason)
            raise TrainingFailed(reason)
        losses["total"].backward()
        if cfg.train.grad_clip > 0:
            values["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.train.grad_clip))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if hasattr(objective, "after_step"):
            objective.after_step()
        done, n = step + 1, batch.images.shape[0]
        tick = log_step(store, cfg, acc, values, n * objective.encoder.num_tokens, per_sample * n, done,
                        sched.get_last_lr()[0], tick, progress)
        if cfg.eval.every and done % cfg.eval.every == 0 and done < cfg.steps:
            _evaluate(store, objective, cfg, done, final=False)
            objective.train()
        if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0 and done < cfg.steps:
            store.save_checkpoint(done, _checkpoint(objective, opt, sched, done, acc))
            store.write_status("running", step=done, total_steps=cfg.steps, world_size=1)
            if interrupt and interrupt.after_step == done:
                return store.path
    final = _evaluate(store, objective, cfg, cfg.steps, final=True)
    store.save_checkpoint(cfg.steps, _checkpoint(objective, opt, sched, cfg.steps, acc))
    exported = upstream.export_weights(store, objective.state_dict())  # what downstream runs load, committed
    store.write_status("completed", step=cfg.steps, total_steps=cfg.steps, world_size=1, **exported,
                       final={k: v for k, v in final.items() if isinstance(v, (int, float))})
    return store.path
