"""Evaluation of one model on held-out data: understanding, generation, inference scaling.

Which metrics exist depends on `data.source`:

- world (held-out world indices, exact ground truth): understanding as held-out caption loss, zero-shot
  attribute accuracy (with chance levels) and linear probes; collapse diagnostics of the visual input
  embeddings (`study.evaluation.diagnostics`); generation as semantic metrics (on every held-out image, since
  2026-12-06; 64 before) or pixel metrics (64 images) beside trivial predictors. At the final evaluation,
  inference-time scaling (masked-view ensembles; diffusion sampling steps) is written to `inference_scaling.json`,
  decoded images to `samples.npz` and each zero-shot question's outcome to `zero_shot_answers.npz` in the run
  directory.
- shards (the held-out shards, captions only; `study.evaluation.heldout`): held-out caption loss, the
  semantic and pixel losses and semantic metrics where the objective has them, the collapse diagnostics,
  and data counts
  (evaluated samples, corrupt training samples skipped). No attribute questions, probes or
  inference-scaling files: there is no ground truth to ask about.

Either source adds the benchmarks of `eval.benchmarks` (`study.evaluation.bench`) as `bench/<task>/<metric>`.

Every rank of a run calls `evaluate` alike and makes the same collectives (each evaluates its share of the
held-out data); only the writing of files is rank 0's.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from study.config import RunConfig
from study.data.batch import make_batch
from study.data.loader import held_out_indices
from study.data.world import World
from study.evaluation.bench.run import run_benchmarks
from study.evaluation.bench.scoring import Shard
from study.evaluation.diagnostics import collapse_diagnostics
from study.evaluation.generation import pixel_metrics, semantic_metrics
from study.evaluation.heldout import heldout_metrics
from study.evaluation.probe import linear_probe
from study.evaluation.ranks import ONE, Split
from study.evaluation.zero_shot import masked_view_scaling, zero_shot
from study.files import atomic_write
from study.model.flops import forward_flops
from study.model.unified import UnifiedModel
from study.model.vit import unpatchify
from study.objectives import caption_loss

GENERATION_IMAGES = 64
ANSWERS = "zero_shot_answers.npz"
DECODED_IMAGES = 8


def eval_generator(cfg: RunConfig, step: int) -> torch.Generator:
    """The generator of an evaluation's random draws: fixed by seed and step, so every rank draws alike."""
    return torch.Generator().manual_seed(cfg.train.seed * 7919 + step * 13 + 5)


@torch.no_grad()
def evaluate(model: UnifiedModel, cfg: RunConfig, step: int, final: bool, world: World | None,
             run_dir: Path | None = None, split: Split = ONE) -> dict:
    """All metrics at `step` as a flat dict (random-init floor when step == 0), on the model's device, on the run's
    `world` (None for a run on shards). Every rank of a several-rank run calls it (`split`: its rank of the world
    size) on the live model, evaluates its share of the held-out data, and gets the same metrics; the final
    evaluation's files go to `run_dir` (rank 0's: None elsewhere)."""
    was_training = model.training
    model.eval()
    gen = eval_generator(cfg, step)
    if cfg.data.source == "shards":
        out = heldout_metrics(model, cfg, step, gen, run_dir, split.rank, split.world)
    else:
        out = _world_metrics(model, cfg, world, gen, final, run_dir, split)
    if cfg.eval.benchmarks:
        out.update(run_benchmarks(model, cfg, cfg.eval.benchmarks, cfg.eval.bench_limit,
                                  Shard(split.rank, split.world)))
    model.train(was_training)
    return out


def _world_metrics(model: UnifiedModel, cfg: RunConfig, world: World, gen: torch.Generator, final: bool,
                   run_dir: Path | None, split: Split) -> dict:
    """The world's metrics; each rank of `split` encodes, captions, scores and probes its block of the held-out images
    and the results are gathered (the generation metrics' 64 images are evaluated alike by every rank)."""
    n = cfg.eval.num_images
    batch = make_batch(world, held_out_indices(0, n))
    images, tokens = batch.images.to(model.device), batch.tokens.to(model.device)
    rows = split.rows(n)
    _, local = model.encode(images[rows])
    hidden, _ = model(local, tokens[rows])
    loss = caption_loss(model.text_logits(hidden, model.num_visual), tokens[rows]).double()
    units = (tokens[rows, 1:] != model.pad_id).sum().double()
    loss_sum, unit_sum = split.gather(torch.stack([loss * units, units])[None]).sum(0)
    out: dict = {"caption_loss": float(loss_sum / unit_sum)}
    embeds = split.gather(local)
    out.update(collapse_diagnostics(embeds))
    answers: dict = {}
    out.update(zero_shot(model, cfg, embeds, batch.scenes, split, answers))
    probe = make_batch(world, held_out_indices(n, cfg.eval.probe_images))
    out.update(linear_probe(model, cfg, probe.images.to(model.device), probe.scenes, split))
    gen_images = images[:GENERATION_IMAGES]
    if model.semantic_head is not None:  # every held-out image: the rollout's noise is part of takeaway 3's variance
        out.update(semantic_metrics(model, cfg, images, gen, (probe.images.to(model.device), probe.scenes,
                                                               batch.scenes)))
    if model.pixel_head is not None:
        pixel, diffusion_rows, decoded = pixel_metrics(model, cfg, gen_images, gen, final)
        out.update(pixel)
    if not final:
        return out
    scaling = {"views": [], "diffusion_steps": []}
    if cfg.eval.inference_scaling:  # every rank scores its share of the views
        fwd = forward_flops(cfg, 0)
        per_token = (fwd["llm"] + fwd.get("lm_head", 0.0)) / model.num_visual
        scaling["views"] = masked_view_scaling(model, cfg, embeds, batch.scenes, gen, per_token, split)
        if model.pixel_head is not None:
            scaling["diffusion_steps"] = diffusion_rows
    if run_dir is not None:
        atomic_write(Path(run_dir) / "inference_scaling.json", json.dumps(scaling, indent=1).encode())
        _save_answers(Path(run_dir) / ANSWERS, answers)
        if model.pixel_head is not None:
            _save_decoded(Path(run_dir) / "samples.npz", gen_images[:DECODED_IMAGES],
                          unpatchify(decoded[:DECODED_IMAGES], cfg.model.patch_size))
    return out


def _save_answers(path: Path, answers: dict) -> None:
    """Each final zero-shot question's image, attribute and outcome, so that the noise of sampling these images can be
    measured for a paired difference (the two runs answered the same questions)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, image=answers["image"].astype(np.int32), attribute=answers["attribute"].astype("U8"),
                        right=answers["right"])
    atomic_write(path, buffer.getvalue())


def _save_decoded(path: Path, originals: torch.Tensor, decoded: torch.Tensor) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, original=originals.float().cpu().numpy(),
                        decoded=((decoded.float() + 1) / 2).clamp(0, 1).cpu().numpy())
    atomic_write(path, buffer.getvalue())
