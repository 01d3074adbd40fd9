"""Configs that train exactly alike: keys that, given the others, change nothing a run computes or records except
the FLOPs it counts, and the effective identity left once they are set back to their defaults.

- Without masking (`masking.distribution: none`) no other masking key acts (no mask is drawn; `caption_on: clean`
  reads the sequence the caption reads anyway).
- Without a generation head, masking only feeds the generation heads when the caption reads the clean sequence
  (`caption_on: clean`): the losses, gradients and draws are those of no masking (the masked forward is computed
  and counted in the FLOPs, and no loss reads it).
- Without a semantic part, no semantic key acts, nor `model.paired_init` (it orders the initial draws around a
  semantic head); without a pixel part, no pixel key; with the MSE pixel head, no diffusion key.

Two trials with one effective identity train identically: a grid needs only one of them (`sweep plan` lists them,
`sweep launch` trains one and records the other as its copy).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from study.config import RunConfig, non_defaults

SEMANTIC_KEYS = ("semantic_weight", "semantic_loss", "target_ema", "target_projector", "target_norm",
                 "semantic_grad_to_inputs")
PIXEL_KEYS = ("pixel_weight", "pixel_head", "pixel_grad_to_llm", "diffusion_width", "diffusion_depth",
              "diffusion_timesteps", "diffusion_batch_mul")
DIFFUSION_KEYS = tuple(k for k in PIXEL_KEYS if k.startswith("diffusion_"))


def without_effect(cfg: RunConfig) -> list[str]:
    """The config keys (section.key) that set away from their default change nothing in this config's run."""
    parts = cfg.objective.parts()
    semantic = any(p.startswith("semantic") for p in parts)
    masking = [f"masking.{f.name}" for f in dataclasses.fields(cfg.masking)]
    keys = []
    if cfg.masking.distribution == "none" or (not parts and cfg.masking.caption_on == "clean"):
        keys += masking
    if not semantic:
        keys += [f"objective.{k}" for k in SEMANTIC_KEYS] + ["model.paired_init"]
    if "pixel" not in parts:
        keys += [f"objective.{k}" for k in PIXEL_KEYS]
    elif cfg.objective.pixel_head != "diffusion":
        keys += [f"objective.{k}" for k in DIFFUSION_KEYS]
    return keys


def effective_id(cfg: RunConfig) -> str:
    """The run id of `cfg` with its keys without effect set back to their defaults: equal for configs that train
    exactly alike."""
    plain = dataclasses.replace(cfg, **{s.name: dataclasses.replace(getattr(cfg, s.name))
                                         for s in dataclasses.fields(cfg)})
    for key in without_effect(cfg):
        section, name = key.split(".")
        values = getattr(plain, section)
        setattr(values, name, getattr(type(values)(), name))
    blob = json.dumps(non_defaults(plain), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
