"""A run's model, rebuilt from what the run is made of: fresh for training (its config's random initialisation from
its seed, with its upstream runs' weights loaded), or trained (from a run directory and one of its checkpoints,
for `eval`, `bench` and the lmms-eval adapter; an encoder-pretraining stage gives its objective module).

The upstream references are resolved once, where the run is prepared (`study.inputs.prepare`), and the model is
built from the resolved config: no caller reads an upstream run itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from study.checkpoint import load_at_step, load_module_weights, load_weights
from study.errors import UserError
from study.inputs import RunInputs, prepare
from study.model.unified import UnifiedModel
from study.pretrain.objectives import build_objective
from study.runstore import RunStore, open_run


def build_model(inputs: RunInputs, weights: bool = True) -> UnifiedModel:
    """The run's model as training starts it, drawn from torch's global generator (seeded by the caller), with the
    weights of its upstream runs loaded (`weights=False`: pretrained backbones left on the meta device, the
    upstream encoder assigned into them; see study/model/meta_init.py)."""
    cfg = inputs.resolved
    model = UnifiedModel(cfg, weights)
    m, o = cfg.model, cfg.objective
    encoder = load_module_weights(m.encoder_checkpoint, "encoder", "model.encoder_checkpoint") \
        if m.encoder_checkpoint else None
    projector = load_module_weights(o.target_projector, "projector", "objective.target_projector") \
        if o.target_projector else None
    model.load_upstream(encoder, projector, assign=not weights)
    return model


@dataclass
class TrainedRun:
    """A run rebuilt from its directory: its inputs, its model (eval mode, on the CPU) and the checkpoint's step."""

    inputs: RunInputs
    store: RunStore
    model: nn.Module
    step: int


def load_trained(run_dir: str | Path, step: int | None = None, command: str = "eval") -> TrainedRun:
    """A run's model with the weights of `step` (default: the latest checkpoint; 0: the random initialisation the
    run started from, drawn again from its seed): the VLM, or a pretraining stage's objective module."""
    store = open_run(run_dir, command)
    inputs = prepare(store.config(), store.path.parent)
    state = None if step == 0 else load_at_step(store, step)
    torch.manual_seed(inputs.cfg.train.seed)  # as training does before it builds the model
    if inputs.cfg.objective.task != "vlm":
        model: nn.Module = build_objective(inputs.resolved)
        if state is not None:
            model.load_state_dict(state["model"])
    else:
        model = build_model(inputs)
        if state is not None:
            load_weights(model, inputs.resolved, state["model"])
    return TrainedRun(inputs, store, model.eval(), 0 if state is None else state["step"])


def load_vlm(run_dir: str | Path, step: int | None = None, command: str = "bench") -> TrainedRun:
    """`load_trained` for the commands that ask the LLM (an encoder-pretraining stage has none)."""
    store = open_run(run_dir, command)
    if store.config().objective.task != "vlm":
        raise UserError(f"{command} '{run_dir}': an encoder-pretraining stage has no LLM to ask")
    return load_trained(run_dir, step, command)
