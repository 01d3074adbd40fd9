"""Typed run config: dataclasses loaded from YAML presets, dotted overrides, whole-config validation.

A run is fully described by a `RunConfig`; its run id is a hash of the resolved config. Every
choice the paper leaves open is a field here (never a hidden constant), so it can be a sweep axis.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from study.errors import UserError

PRESET_DIR = Path(__file__).parent / "configs"
TARGET_PARTS = ("semantic_input", "semantic_encoder", "pixel")
TRACKERS = ("tensorboard", "wandb", "mlflow")


def opt(default: Any, doc: str, *, choices: tuple | None = None, ge: float | None = None,
        gt: float | None = None, le: float | None = None, identity: bool = True) -> Any:
    """A config field with its documentation and the values it allows; `identity=False` for a field that does not
    change what a run computes (where its records are mirrored), so it is not part of the run id."""
    meta = {"doc": doc, "choices": choices, "ge": ge, "gt": gt, "le": le, "identity": identity}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """Architecture: vision encoder, projector and LLM sizes, attention, backbone."""

    size: str = opt("small", "named size preset that fills every dimension left unset",
                    choices=("tiny", "small", "medium", "base", "large"))
    patch_size: int = opt(4, "ViT patch side in pixels (must divide data.image_size)", ge=1)
    enc_width: int | None = opt(None, "vision encoder width (from size)", ge=8)
    enc_depth: int | None = opt(None, "vision encoder blocks (from size)", ge=1)
    width: int | None = opt(None, "LLM width (from size)", ge=8)
    depth: int | None = opt(None, "LLM blocks (from size)", ge=1)
    heads: int | None = opt(None, "attention heads in encoder and LLM (from size)", ge=1)
    mlp_ratio: float = opt(2.667, "SwiGLU hidden width / model width", gt=0)
    visual_attention: str = opt("causal", "attention among visual tokens",
                                choices=("causal", "bidirectional"))
    attention: str = opt("sdpa", "attention kernel: torch SDPA, xformers memory-efficient (CUDA only) or a plain "
                                 "reference", choices=("sdpa", "xformers", "reference"))
    encoder_checkpoint: str = opt("", "load the vision encoder from this checkpoint file ('' = random init)")
    freeze_encoder: bool = opt(False, "keep the vision encoder's weights fixed")
    paired_init: bool = opt(False, "initialise encoder, projector and LLM before any head, so arms that differ only "
                                   "in their heads start from identical shared weights at one seed (false: v1's "
                                   "order, where a semantic head shifts every later draw)")
    backbone: str = opt("mini", "components: mini (built-in ViT and LLM, sized by model.size) or hf (pretrained "
                                "transformers backbones from local directories; needs data.source=shards)",
                        choices=("mini", "hf"))
    vision_path: str = opt("", "hf: directory of a DINOv2 or SigLIP vision model (transformers format)")
    vision_layer: int = opt(-1, "hf: vision hidden layer whose patch tokens are the features (-1 = last block, "
                                "-2 = the one before; 0 = the patch embeddings)", ge=-64, le=64)
    llm_path: str = opt("", "hf: directory of a causal LM (Qwen2/Llama style) and its tokenizer")
    vae_path: str = opt("", "hf with a pixel target: directory of a KL VAE (diffusers AutoencoderKL), frozen; "
                            "its latents are the pixel target")
    vae_latent_patch: int = opt(1, "hf: side of the latent patch that is one visual token's pixel target", ge=1,
                                le=8)


@dataclass
class DataConfig:
    """Training data: the miniature world (version, seed, rendering) or shards, and its unique samples."""

    world_version: int = opt(1, "miniature world: 1 (the v1 study's renderer) or 2 (calibrated objects and a "
                                    "counter-based random stream rendered batch-wide)", choices=(1, 2))
    world_seed: int = opt(0, "seed of the procedural world (images are a function of seed and index)", ge=0,
                          le=2**63 - 1)
    image_size: int = opt(32, "image side in pixels (hf backbone: the vision encoder's own size is used)", ge=8,
                          le=256)
    min_objects: int = opt(1, "fewest objects per image", ge=1, le=9)
    max_objects: int = opt(4, "most objects per image (distinct 3x3 cells)", ge=1, le=9)
    caption_coverage: float = opt(0.5, "fraction of objects and of their attributes a caption names",
                                  gt=0, le=1)
    object_scale: float = opt(1.0, "object radius multiplier (radius = 0.12 / 0.19 of the image side, small / "
                                   "large, times this)", gt=0, le=3)
    position_jitter: float = opt(0.24, "largest offset of an object from its cell centre, as a fraction of the cell "
                                       "side (each axis uniform in +-half of it)", ge=0, le=0.5)
    texture_strength: float = opt(0.3, "amplitude of the meaningless background texture", ge=0, le=1)
    unique_samples: int = opt(100_000, "D: training uses world indices [0, D) (shards: the first D samples in "
                                       "index order), repeated in epochs", ge=1, le=2**40)
    source: str = opt("world", "data: the miniature world, or WebDataset shards of (image, caption) pairs",
                      choices=("world", "shards"))
    shards: str = opt("", "shards: directory holding index.json and the tar shards it lists")
    held_out_shards: int = opt(1, "shards: the last k shards of the index are held out for evaluation", ge=1)
    shuffle_buffer: int = opt(1000, "shards: samples in each reader's shuffle buffer (1 = shard order)", ge=1)
    workers: int = opt(0, "shards: DataLoader worker processes per rank (0 = read in the training process)", ge=0,
                       le=64)
    max_caption_tokens: int = opt(64, "shards with the hf backbone: captions are cut to this many tokens, "
                                      "start and end included", ge=3)


@dataclass
class ObjectiveConfig:
    """What the run trains: the task, the generation target and the weights of its losses."""

    task: str = opt("vlm", "what the run trains: the VLM (vlm), or a vision encoder alone as a pretraining stage: "
                           "image-text sigmoid contrastive (contrastive) or masked-feature self-distillation without "
                           "captions (self_distill)", choices=("vlm", "contrastive", "self_distill"))
    target: str = opt("none", "generation target: none, or '+'-joined parts of " + ", ".join(TARGET_PARTS))
    understanding_weight: float = opt(1.0, "weight of caption next-token cross-entropy", ge=0)
    semantic_weight: float = opt(1.0, "weight of the semantic (input-embedding or encoder) loss", ge=0)
    semantic_loss: str = opt("cosine", "loss on semantic targets", choices=("mse", "cosine", "smooth_l1"))
    target_ema: float = opt(0.0, "EMA decay of the projector copy that defines semantic_input targets "
                                 "(0 = the live projector)", ge=0, le=0.99999)
    target_projector: str = opt("", "semantic_input: a checkpoint (or run:<id>) whose projector, frozen, defines the "
                                    "targets ('' = the live or EMA projector)")
    target_norm: bool = opt(False, "normalise each semantic target token to zero mean and unit variance over its "
                                   "features (no learned affine)")
    semantic_grad_to_inputs: bool = opt(True, "the semantic loss's gradient reaches projector and encoder through "
                                              "the LLM's inputs (false: it trains LLM and head on detached inputs, "
                                              "in a second forward of the visual tokens)")
    pixel_weight: float = opt(1.0, "weight of the pixel loss", ge=0)
    pixel_head: str = opt("diffusion", "pixel predictor", choices=("diffusion", "mse"))
    pixel_grad_to_llm: bool = opt(True, "pixel loss gradient reaches the LLM (false: a decoder on "
                                        "detached hidden states)")
    diffusion_width: int = opt(128, "width of the per-token diffusion MLP (at least the pixel target's values per "
                                    "token: patch_size^2 x 3 for the mini backbone)", ge=8)
    diffusion_depth: int = opt(2, "residual AdaLN blocks in the diffusion MLP", ge=1)
    diffusion_timesteps: int = opt(1000, "DDPM training timesteps", ge=10)
    diffusion_batch_mul: int = opt(4, "noise draws per token per step", ge=1)

    def parts(self) -> tuple[str, ...]:
        """The generation target's parts ('semantic_input+pixel_grad' has two; 'none' has none)."""
        return () if self.target == "none" else tuple(self.target.split("+"))


@dataclass
class MaskingConfig:
    """Masking of visual inputs: how the probability is drawn, per batch or sample, and where losses apply."""

    distribution: str = opt("none", "how each masking probability is drawn",
                            choices=("none", "fixed", "uniform", "gaussian", "truncnorm"))
    p: float = opt(0.5, "fixed: the masking probability", ge=0, le=1)
    low: float = opt(0.7, "uniform/truncnorm: lower bound", ge=0, le=1)
    high: float = opt(1.0, "uniform/truncnorm: upper bound", ge=0, le=1)
    mean: float = opt(1.0, "gaussian/truncnorm: mean", ge=-10, le=10)
    std: float = opt(0.25, "gaussian/truncnorm: standard deviation", gt=0, le=10)
    per: str = opt("batch", "one probability per batch or per sample", choices=("batch", "sample"))
    loss_on: str = opt("next", "generation loss on every next position or on masked ones only",
                       choices=("next", "masked"))
    caption_on: str = opt("masked", "caption loss from the masked sequence, or from the clean one (a second forward) "
                                    "while generation losses use the masked one (the same when nothing is masked)",
                          choices=("masked", "clean"))


@dataclass
class TrainConfig:
    """Optimisation: seed, samples seen, batch, learning-rate schedule, precision, checkpoints and ranks."""

    seed: int = opt(0, "seed of init, masking and noise (data order uses it too)", ge=0, le=2**31 - 1)
    samples_seen: int = opt(64_000, "total training samples (steps = samples_seen / batch_size)", ge=1, le=10**13)
    batch_size: int = opt(64, "images per step", ge=1, le=65536)
    lr: float = opt(1e-3, "peak AdamW learning rate", gt=0, le=1)
    min_lr_ratio: float = opt(0.1, "final learning rate / peak", ge=0, le=1)
    warmup_steps: int = opt(100, "linear warmup steps", ge=0)
    warmup_fraction: float = opt(0.0, "warmup as a fraction of the run's steps (0 = use train.warmup_steps)", ge=0,
                                 le=0.5)
    weight_decay: float = opt(0.05, "AdamW weight decay (matrices only)", ge=0)
    grad_clip: float = opt(1.0, "global gradient-norm clip (0 = off)", ge=0)
    precision: str = opt("fp32", "autocast precision", choices=("fp32", "bf16"))
    checkpoint_every: int = opt(200, "steps between checkpoints (0 = only at the end)", ge=0)
    checkpoint_format: str = opt("auto", "full: one file gathered to rank 0; sharded: torch.distributed.checkpoint, "
                                         "each rank writing its own shards and frozen modules loaded from disk left "
                                         "out; auto: sharded under several ranks, full in one process",
                                 choices=("auto", "full", "sharded"), identity=False)
    checkpoint_async: bool = opt(False, "sharded checkpoints: write in a background thread while training goes on "
                                        "(the state is copied to CPU memory first)", identity=False)
    log_every: int = opt(10, "steps between metric records", ge=1)
    threads: int = opt(0, "torch intra-op threads (0 = torch default)", ge=0)
    device: str = opt("auto", "where to train: auto (this rank's GPU when CUDA is available, else cpu), cpu or cuda",
                      choices=("auto", "cpu", "cuda"))
    parallel: str = opt("auto", "several ranks (torchrun, Slurm tasks): ddp replicates the model, fsdp shards it "
                                "(fully_shard per block); none allows only one process; auto is fsdp for "
                                "model.backbone=hf, ddp for the miniature. How a run is laid out on ranks, not what "
                                "it trains: a run resumes under another", choices=("auto", "none", "ddp", "fsdp"),
                        identity=False)
    fsdp_replicas: int = opt(1, "fsdp: hybrid sharding - the model replicated across this many groups of ranks "
                                "(typically nodes) and sharded within each; 1 shards it across all ranks", ge=1,
                             identity=False)
    grad_accum: int = opt(1, "micro-batches per step on each rank (each is batch_size / (ranks x grad_accum) "
                             "images)", ge=1)
    dist_timeout_min: float = opt(30.0, "several ranks: minutes a collective may wait for the other ranks before the "
                                        "run fails (torch's process-group timeout)", gt=0, le=1440)
    activation_checkpointing: bool = opt(False, "recompute each transformer block's activations in backward")
    compile: bool = opt(False, "torch.compile each transformer block")
    trackers: list[str] = opt([], "experiment trackers that mirror the run store's records (optional extra "
                                  "'tracking'); not part of the run id", choices=TRACKERS, identity=False)


@dataclass
class EvalConfig:
    """Evaluation: held-out images, probes, rollouts and inference-scaling settings."""

    every: int = opt(0, "steps between evaluations (0 = only before and after training)", ge=0)
    num_images: int = opt(128, "held-out images for zero-shot scoring and generation metrics", ge=4)
    probe_images: int = opt(512, "held-out images for the linear probe (split train/test)", ge=20)
    probe_layer: str = opt("llm.mid", "probe features: encoder, projector, llm.<k>, llm.mid or llm.final")
    rollout_steps: int = opt(8, "free-running rollout length for semantic targets", ge=1)
    rollout_cache: bool = opt(True, "the free-running rollout feeds each predicted token once through a KV cache "
                                    "(causal visual attention); false recomputes the whole prefix at every step, "
                                    "as the cpu studies' records were measured (equal within float rounding)",
                              identity=False)
    views: list[int] = opt([1, 2, 4, 8], "inference scaling: answers averaged over K masked views")
    view_mask_ratio: float = opt(0.25, "fraction of visual tokens masked in each view", ge=0, le=1)
    diffusion_steps: list[int] = opt([4, 16, 64], "inference scaling: diffusion sampling steps")
    inference_scaling: bool = opt(True, "run the inference-scaling evaluations at the end")
    benchmarks: list[str] = opt([], "benchmark files or directories evaluated at every evaluation "
                                "(study/evaluation/bench/tasks.py lists the layouts)")
    bench_limit: int = opt(0, "rows of each benchmark evaluated (0 = all)", ge=0)


@dataclass
class RunConfig:
    """A run's whole configuration; its identity-bearing fields define the run id."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def steps(self) -> int:
        """Optimizer steps: the samples seen over the batch size, rounded up."""
        return math.ceil(self.train.samples_seen / self.train.batch_size)

    @property
    def warmup(self) -> int:
        """Warmup steps: a fraction of the run, or train.warmup_steps."""
        t = self.train
        return round(t.warmup_fraction * self.steps) if t.warmup_fraction else t.warmup_steps

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def run_id(self) -> str:
        """Hash of the values that differ from the schema's defaults: a field added later with a default keeps
        every existing run id (changing a default is a breaking change)."""
        blob = json.dumps(non_defaults(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def identity(self) -> dict:
        """The config without its fields outside the run's identity (`opt(identity=False)`)."""
        out = self.to_dict()
        for section in dataclasses.fields(self):
            for f in dataclasses.fields(getattr(self, section.name)):
                if not f.metadata.get("identity", True):
                    del out[section.name][f.name]
        return out


def non_defaults(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """The resolved config's identity values that differ from their field defaults, by section."""
    out: dict[str, dict[str, Any]] = {}
    for section in dataclasses.fields(cfg):
        values = getattr(cfg, section.name)
        defaults = type(values)()
        changed = {f.name: getattr(values, f.name) for f in dataclasses.fields(values)
                   if f.metadata.get("identity", True) and getattr(values, f.name) != getattr(defaults, f.name)}
        if changed:
            out[section.name] = changed
    return out


SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(enc_width=32, enc_depth=1, width=32, depth=2, heads=2),
    "small": dict(enc_width=128, enc_depth=2, width=128, depth=4, heads=4),
    "medium": dict(enc_width=192, enc_depth=3, width=256, depth=6, heads=4),
    "base": dict(enc_width=384, enc_depth=6, width=512, depth=8, heads=8),
    "large": dict(enc_width=384, enc_depth=6, width=1024, depth=12, heads=16),  # ~150M LLM: GPU benchmarks
}


# ---------------------------------------------------------------------------------------------
# building a config from nested dicts, with one clear error per bad key


def _allowed_types(tp: Any) -> tuple:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return tuple(a for a in typing.get_args(tp))
    return (tp,)


def _type_name(tp: Any) -> str:
    names = []
    for t in _allowed_types(tp):
        if t is type(None):
            names.append("null")
        elif typing.get_origin(t) is list:
            names.append(f"list of {typing.get_args(t)[0].__name__}")
        else:
            names.append(t.__name__)
    return " or ".join(names)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a YAML/CLI value to the field type, or raise a UserError naming the key."""
    for t in _allowed_types(tp):
        if t is type(None) and value is None:
            return None
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                break
            return float(value)
        if t is float and isinstance(value, str):
            try:
                parsed = float(value)
            except ValueError:
                continue
            if math.isfinite(parsed):
                return parsed
        if t is str and isinstance(value, str):
            return value
        if typing.get_origin(t) is list and isinstance(value, list):
            (item,) = typing.get_args(t)
            return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    raise UserError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")


def _check_range(key: str, value: Any, meta: dict) -> None:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        if meta["choices"] is not None and v not in meta["choices"]:
            raise UserError(f"config key '{key}': {v!r} is not one of {', '.join(map(str, meta['choices']))}")
        bounds = [(meta["ge"], lambda a, b: a >= b, ">="), (meta["gt"], lambda a, b: a > b, ">"),
                  (meta["le"], lambda a, b: a <= b, "<=")]
        for bound, ok, sym in bounds:
            if bound is not None and isinstance(v, (int, float)) and not ok(v, bound):
                raise UserError(f"config key '{key}': {v!r} out of range (allowed: {sym} {bound})")


@functools.cache
def _schema(cls: type) -> tuple[dict[str, dataclasses.Field], dict[str, Any]]:
    """A config dataclass's fields and resolved type hints (resolving them is slow: done once per class)."""
    return {f.name: f for f in dataclasses.fields(cls)}, typing.get_type_hints(cls)


def _build(cls: type, values: dict, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise UserError(f"config key '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {values!r}")
    fields, hints = _schema(cls)
    for key in values:
        if key not in fields:
            raise UserError(f"unknown config key '{prefix}{key}' (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name not in values:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, values[name], f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(prefix + name, values[name], tp)
            _check_range(prefix + name, kwargs[name], f.metadata)
    return cls(**kwargs)


def _validate_whole(cfg: RunConfig) -> None:
    """Checks that span several keys."""
    m, d, o, k = cfg.model, cfg.data, cfg.objective, cfg.masking
    if d.image_size % m.patch_size:
        raise UserError(f"config key 'model.patch_size': {m.patch_size} must divide data.image_size "
                        f"{d.image_size}")
    if d.min_objects > d.max_objects:
        raise UserError(f"config key 'data.min_objects': {d.min_objects} exceeds data.max_objects "
                        f"{d.max_objects}")
    parts = o.parts()
    bad = [p for p in parts if p not in TARGET_PARTS]
    if bad or len(set(parts)) != len(parts) or (o.target != "none" and not parts):
        raise UserError(f"config key 'objective.target': {o.target!r} is not 'none' or a '+'-joined set of "
                        f"{', '.join(TARGET_PARTS)}")
    if "semantic_input" in parts and "semantic_encoder" in parts:
        raise UserError("config key 'objective.target': choose one of semantic_input and semantic_encoder")
    for name in ("width", "enc_width"):
        if getattr(m, name) % m.heads:
            raise UserError(f"config key 'model.{name}': {getattr(m, name)} is not divisible by "
                            f"model.heads {m.heads}")
    _validate_sources(cfg)
    _validate_v2(cfg)
    patch_dim = m.patch_size ** 2 * 3
    if m.backbone == "mini" and "pixel" in parts and o.pixel_head == "diffusion" and o.diffusion_width < patch_dim:
        raise UserError(f"config key 'objective.diffusion_width': {o.diffusion_width} is narrower than the pixel "
                        f"target ({m.patch_size}x{m.patch_size}x3 = {patch_dim} values per token); use >= {patch_dim}")
    if k.low > k.high:
        raise UserError(f"config key 'masking.low': {k.low} exceeds masking.high {k.high}")
    if not cfg.eval.views or not cfg.eval.diffusion_steps:
        raise UserError("config key 'eval.views' / 'eval.diffusion_steps': must not be empty")
    if any(v < 1 for v in cfg.eval.views + cfg.eval.diffusion_steps):
        raise UserError("config key 'eval.views' / 'eval.diffusion_steps': entries must be >= 1")
    layer = cfg.eval.probe_layer
    if layer not in ("encoder", "projector", "llm.mid", "llm.final"):
        idx = layer.removeprefix("llm.")
        if not (layer.startswith("llm.") and idx.isdigit() and int(idx) < m.depth):
            raise UserError(f"config key 'eval.probe_layer': {layer!r} is not encoder, projector, llm.mid, "
                            f"llm.final or llm.<k> with k < model.depth ({m.depth})")


def _validate_v2(cfg: RunConfig) -> None:
    """Checks of the paper's-regime keys. A schedule shorter than its warmup is an error from world v2 on; v1
    configs keep theirs, so the committed v1 runs (some of which never left warmup) stay valid."""
    o = cfg.objective
    if cfg.data.world_version >= 2 and cfg.steps < cfg.warmup:
        raise UserError(f"config key 'train.warmup_steps': the run's {cfg.steps} steps (train.samples_seen "
                        f"{cfg.train.samples_seen} / train.batch_size {cfg.train.batch_size}) are fewer than its "
                        f"{cfg.warmup} warmup steps; lower the warmup or use train.warmup_fraction")
    if o.target_projector and "semantic_input" not in o.parts():
        raise UserError("config key 'objective.target_projector': applies to objective.target semantic_input only")
    if o.target_projector and o.target_ema:
        raise UserError("config key 'objective.target_projector': a frozen target projector takes no "
                        "objective.target_ema")
    if o.task != "vlm" and cfg.model.backbone != "mini":
        raise UserError(f"config key 'objective.task': {o.task} pretrains the mini backbone's encoder only")


def _validate_sources(cfg: RunConfig) -> None:
    """Backbone and data source choices that go together (paths are checked when a run starts)."""
    m, d = cfg.model, cfg.data
    if d.source == "shards" and not d.shards:
        raise UserError("config key 'data.shards': data.source=shards needs the shard directory")
    if m.backbone == "mini":
        return
    if d.source != "shards":
        raise UserError("config key 'model.backbone': hf reads its data from shards (set data.source=shards)")
    needed = ["vision_path", "llm_path"] + (["vae_path"] if "pixel" in cfg.objective.parts() else [])
    for key in needed:
        if not getattr(m, key):
            raise UserError(f"config key 'model.{key}': the hf backbone needs this directory")
    if m.visual_attention != "causal":
        raise UserError("config key 'model.visual_attention': hf LLMs run with causal attention only")
    if m.attention not in ("sdpa", "reference"):
        raise UserError(f"config key 'model.attention': {m.attention!r} is not available for hf backbones "
                        "(allowed: sdpa, reference)")
    if m.encoder_checkpoint:
        raise UserError("config key 'model.encoder_checkpoint': applies to the mini backbone only")


def from_dict(values: dict) -> RunConfig:
    """Build, resolve size presets and validate a config from nested dicts."""
    cfg = _build(RunConfig, values, "")
    for name, value in SIZES[cfg.model.size].items():
        if getattr(cfg.model, name) is None:
            setattr(cfg.model, name, value)
    _validate_whole(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------
# YAML files, presets and dotted overrides


def read_yaml(path: Path) -> dict:
    """The mapping of config sections in YAML file `path` (a one-line error naming the file, and line, otherwise)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read config file '{path}': {e.__class__.__name__}") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"config file '{path}'{where}: not valid YAML") from None
    if values is None:
        raise UserError(f"config file '{path}' is empty (expected a mapping of config sections)")
    if not isinstance(values, dict):
        raise UserError(f"config file '{path}': expected a mapping of config sections")
    return values


def presets() -> list[str]:
    """The names of the bundled presets (`study/configs/*.yaml`)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _source_values(source: str) -> dict:
    """A preset name or a YAML path; a file may name `preset: NAME` to start from a preset."""
    path = Path(source)
    if source in presets():
        values = read_yaml(PRESET_DIR / f"{source}.yaml")
    elif path.suffix in (".yaml", ".yml") or path.exists():
        values = read_yaml(path)
    else:
        raise UserError(f"config '{source}' is neither a preset ({', '.join(presets())}) nor a YAML file")
    base = values.pop("preset", None)
    if base is None:
        return values
    if base not in presets():
        raise UserError(f"config '{source}': preset {base!r} unknown (allowed: {', '.join(presets())})")
    return merge(read_yaml(PRESET_DIR / f"{base}.yaml"), values)


def merge(base: dict, top: dict) -> dict:
    """`base` updated by `top`, nested mappings merged key by key."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict:
    """'train.lr=3e-4' -> {'train': {'lr': '3e-4' parsed as YAML}}."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"override '{text}': expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(source: str, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Resolve a preset or YAML file plus dotted overrides into a validated RunConfig."""
    values = _source_values(source)
    for text in overrides:
        values = merge(values, parse_override(text))
    return from_dict(values)


def config_reference() -> str:
    """The config reference as Markdown (the docs' config reference page, written by `make docs`)."""
    lines = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for section in dataclasses.fields(RunConfig):
        cls = typing.get_type_hints(RunConfig)[section.name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            m = f.metadata
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            allowed = ", ".join(map(str, m["choices"])) if m["choices"] else _type_name(hints[f.name])
            for bound, sym in ((m["ge"], ">="), (m["gt"], ">"), (m["le"], "<=")):
                if bound is not None:
                    allowed += f" {sym} {bound}"
            lines.append(f"| `{section.name}.{f.name}` | `{default}` | {allowed} | {m['doc']} |")
    return "\n".join(lines)
