"""What a grid will cost before it runs (`sweep plan --cost`): per trial and in total, its samples and tokens, its
training and evaluation FLOPs, its device-hours on a device type at an MFU, and the peak memory of its training
step per rank at its parallel layout, with what to change when it does not fit.

- FLOPs are the analytic counts of `study.model.flops` (every component the step runs; a frozen encoder counts its
  forward only). Evaluation FLOPs count the forwards of the held-out and probe images with their captions at each
  evaluation (the initial floor, every `eval.every` steps, the final one); zero-shot candidate scoring, rollouts and
  benchmarks are not counted, so they are a floor.
- Device-hours = FLOPs / (the device's dense bf16 peak x MFU). The MFU is the one given, else the last one measured
  of the real trainer on that device type in `benchmarks/results/`, else an assumed 0.35; its source is printed.
- Memory is `study.model.memory.estimate_step_memory` at the trial's micro-batch on one of `ranks` ranks (FSDP
  shards the state when the run's `train.parallel` resolves to it). A GPU keeps 1 GiB for its CUDA context.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import study
from study.config import RunConfig
from study.distributed import strategy
from study.errors import UserError
from study.model.flops import encoder_stage_flops_per_sample, forward_flops, model_dims, train_flops_per_sample
from study.model.memory import GIB, StepMemory, caption_length, estimate_step_memory
from sweeps.spec import Trial

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
BACKBONES = Path(study.__file__).resolve().parent / "configs" / "backbones"
ASSUMED_MFU = 0.35
CUDA_CONTEXT = 1 * GIB


@dataclasses.dataclass(frozen=True)
class Device:
    """A device a trial is priced on: peak bf16 FLOP/s and usable memory."""

    name: str
    bf16_peak: float  # dense bf16 FLOP/s
    memory: float  # bytes a rank may use
    card: str  # how the GPU benchmark's results name it ('' for the CPU)


def _cpu() -> Device:
    """This machine: its bf16 matmul peak as the hardware benchmark measured it, and its memory."""
    measured = sorted(RESULTS.glob("hardware-*.json"))
    peak = json.loads(measured[-1].read_text())["peaks_flops_per_s"]["bf16"] if measured else 0.0
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Device("cpu (this machine)", peak, memory, "")


# dense bf16 tensor-core peaks from the datasheets (the GPU benchmark's MFU uses the same table)
GPUS = {"h100": Device("NVIDIA H100 80GB", 989e12, 80 * GIB - CUDA_CONTEXT, "H100"),
        "h200": Device("NVIDIA H200 141GB", 989e12, 141 * GIB - CUDA_CONTEXT, "H200"),
        "a100": Device("NVIDIA A100 80GB", 312e12, 80 * GIB - CUDA_CONTEXT, "A100")}
DEVICE_TYPES = (*GPUS, "cpu")


def device(kind: str) -> Device:
    """The device a plan is priced on: this machine's CPU or a GPU kind of `GPUS`."""
    return _cpu() if kind == "cpu" else GPUS[kind]


def measured_mfu(kind: str, params: float) -> tuple[float, str] | None:
    """The MFU measured of the real trainer on `kind` in benchmarks/results/ at the model size nearest `params` (a GPU
    runs a 1M-parameter model at a fraction of a 7B one's MFU), with the file and row it came from."""
    if kind == "cpu":  # the hardware benchmark's rows: the real trainer at two model sizes, the last one kept
        for path in sorted(RESULTS.glob("hardware-*.json"), reverse=True):
            rows = [r for r in json.loads(path.read_text()).get("rows", []) if r.get("precision") == "bf16"]
            if rows:
                return float(rows[-1]["fraction_of_bf16_peak"]), f"measured ({path.name}, {rows[-1]['preset']})"
        return None
    for path in sorted(RESULTS.glob("gpu-*.json"), reverse=True):
        body = json.loads(path.read_text())
        rows = [r for r in body.get("rows", []) if r.get("mfu") and r.get("params") and not r.get("compile")]
        if GPUS[kind].card in body.get("card", "") and rows:
            row = min(rows, key=lambda r: abs(math.log(r["params"] / params)))
            return float(row["mfu"]), f"measured ({path.name}, {row['preset']}, {row['attention']}, not compiled)"
    return None


def plannable(cfg: RunConfig) -> RunConfig:
    """`cfg` with each pretrained backbone path that does not exist (a preset's placeholder) replaced by the vendored
    config of the same name (study/configs/backbones/), so a full-scale trial can be sized before its weights are
    on disk."""
    if cfg.model.backbone != "hf":
        return cfg
    changes = {}
    keys = ("vision_path", "llm_path", "vae_path") if "pixel" in cfg.objective.parts() else ("vision_path", "llm_path")
    for key in keys:
        path = Path(getattr(cfg.model, key))
        if path.exists():
            continue
        vendored = BACKBONES / path.name
        if not (vendored / "config.json").is_file():
            names = ", ".join(sorted(p.name for p in BACKBONES.iterdir() if p.is_dir()))
            raise UserError(f"config key 'model.{key}': '{path}' does not exist and no config of that name is "
                            f"vendored to size it from (study/configs/backbones: {names})")
        changes[key] = str(vendored)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **changes)) if changes else cfg


def parameters(cfg: RunConfig) -> float:
    """How many parameters the run's model has (built under FakeTensorMode from its configs: nothing is
    allocated)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from study.model.unified import UnifiedModel

    hf = cfg.model.backbone == "hf"
    with FakeTensorMode():
        model = UnifiedModel(plannable(cfg), weights=not hf, tokenizer=not hf)
        return float(sum(p.numel() for p in model.parameters()))


def mfu_for(kind: str, given: float | None, params: float) -> tuple[float, str]:
    """The MFU to cost a grid whose models have `params` parameters at, and where it comes from."""
    if given is not None:
        if not 0 < given <= 1:
            raise UserError(f"sweep plan --mfu {given}: must be in (0, 1]")
        return given, "given"
    return measured_mfu(kind, params) or (ASSUMED_MFU, "assumed (no measurement of this device type)")


@dataclasses.dataclass(frozen=True)
class TrialCost:
    """A trial's planned cost: samples, tokens, FLOPs, device hours and whether its step fits in memory."""

    index: int
    run_id: str
    samples: int
    tokens: int
    train_flops: float
    eval_flops: float
    device_hours: float
    memory: StepMemory | None  # None: an encoder-pretraining stage, whose step is not traced
    fits: bool | None
    advice: str

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["memory_gib"] = self.memory.as_gib() if self.memory else None
        del out["memory"]
        return out


def evaluations(cfg: RunConfig) -> int:
    """How many evaluations a run does: at step 0, every `eval.every` steps, and at its end."""
    every = cfg.eval.every
    return 2 + (len(range(every, cfg.steps, every)) if every else 0)


def _advice(cfg: RunConfig, memory: StepMemory, limit: float, ranks: int) -> str:
    """The keys whose change brings the step under `limit`, largest lever first."""
    keys = []
    state = memory.params + memory.grads + memory.optimizer
    if strategy(cfg) != "fsdp" and state > 0.25 * limit:
        keys.append("train.parallel=fsdp" + ("" if ranks > 1 else " on more ranks (--ranks)"))
    if not cfg.train.activation_checkpointing and memory.activations > 0.25 * memory.peak:
        keys.append("train.activation_checkpointing=true")
    if memory.activations > 0.25 * memory.peak:
        keys.append(f"train.grad_accum (now {cfg.train.grad_accum}) or train.batch_size (now {cfg.train.batch_size})")
    return "; ".join(keys) or "a device with more memory"


def trial_cost(trial: Trial, kind: str, mfu: float, ranks: int, memo: dict[str, StepMemory]) -> TrialCost:
    """One trial's FLOPs and device-hours on `kind` at model FLOPs utilisation `mfu`; for a VLM trial also its step
    memory over `ranks` ranks, whether it fits, and what to change when it does not."""
    cfg, dev = plannable(trial.config), device(kind)
    captions = caption_length(cfg)
    samples = cfg.steps * cfg.train.batch_size
    if cfg.objective.task == "vlm":
        per_sample, tokens_per_sample = train_flops_per_sample(cfg, captions), model_dims(cfg).tokens + captions
        per_eval = (cfg.eval.num_images + cfg.eval.probe_images) * sum(forward_flops(cfg, captions).values())
    else:
        per_sample, tokens_per_sample = encoder_stage_flops_per_sample(cfg, captions), model_dims(cfg).tokens
        per_eval = 0.0
    train, evaluation = per_sample * samples, per_eval * evaluations(cfg)
    hours = (train + evaluation) / (dev.bf16_peak * mfu) / 3600 if dev.bf16_peak else float("nan")
    if cfg.objective.task != "vlm":
        return TrialCost(trial.index, trial.run_id, samples, samples * tokens_per_sample, train, evaluation, hours,
                         None, None, "")
    shape = json.dumps([cfg.to_dict()[k] for k in ("model", "objective", "masking")] + [
        cfg.train.batch_size, cfg.train.grad_accum, cfg.train.precision, cfg.train.activation_checkpointing,
        cfg.train.parallel, cfg.data.image_size, captions], sort_keys=True, default=str)
    if shape not in memo:  # trials that differ in seed or data scale trace the same step
        memo[shape] = estimate_step_memory(cfg, ranks, sharded=strategy(cfg) == "fsdp")
    memory = memo[shape]
    fits = memory.peak <= dev.memory
    return TrialCost(trial.index, trial.run_id, samples, samples * tokens_per_sample, train, evaluation, hours,
                     memory, fits, "" if fits else _advice(cfg, memory, dev.memory, ranks))


def plan_costs(trials: list[Trial], kind: str, mfu: float, ranks: int) -> list[TrialCost]:
    """Each trial's cost, pricing the step memory of each distinct model shape once."""
    memo: dict[str, StepMemory] = {}
    return [trial_cost(t, kind, mfu, ranks, memo) for t in trials]
