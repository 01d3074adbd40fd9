"""A run's benchmarks: each task file evaluated and its metrics named `bench/<task name>/<metric>`."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from study.checkpoint import load_weights, read_sharded
from study.config import RunConfig
from study.data.shards import image_size
from study.errors import UserError
from study.evaluation.bench.captioning import evaluate_captioning
from study.evaluation.bench.classification import evaluate_classification
from study.evaluation.bench.multiple_choice import evaluate_choice
from study.evaluation.bench.prompts import Prompts
from study.evaluation.bench.scoring import ONE_PROCESS, Shard
from study.evaluation.bench.tasks import Captioning, Classification, MultipleChoice, Task, load_task
from study.model.unified import UnifiedModel
from study.runstore import RunStore


def load_checkpoint(store: RunStore, step: int | None) -> dict:
    """The run's checkpoint at `step` (default: the latest); a step with none names the steps kept."""
    paths = {int(p.stem.removeprefix("step_")): p for p in store.checkpoints()}
    if not paths:
        raise UserError(f"run '{store.path}': no checkpoint")
    step = max(paths) if step is None else step
    if step not in paths:
        raise UserError(f"--step {step}: no checkpoint at that step (kept: {', '.join(map(str, sorted(paths)))})")
    return read_sharded(paths[step]) if paths[step].is_dir() else torch.load(paths[step], map_location="cpu",
                                                                            weights_only=False)


def load_trained(run_dir: str | Path, step: int | None = None) -> tuple[RunConfig, UnifiedModel, int]:
    """A VLM run's config, its model with the weights of `step` (default: the latest checkpoint; 0: the random
    initialisation the run started from, drawn again from its seed), and the step."""
    from study.train import build_model

    store = RunStore(run_dir)
    if not (store.path / "config.yaml").is_file():
        raise UserError(f"'{run_dir}': not a run directory (no config.yaml)")
    cfg = store.config()
    if cfg.objective.task != "vlm":
        raise UserError(f"'{run_dir}': an encoder-pretraining stage has no LLM to ask")
    state = None if step == 0 else load_checkpoint(store, step)
    torch.manual_seed(cfg.train.seed)  # as training does before it builds the model
    model = build_model(cfg, store.path.parent)
    if state is not None:
        load_weights(model, cfg, state["model"])
    return cfg, model.eval(), 0 if state is None else state["step"]


@functools.lru_cache(maxsize=16)
def cached_task(path: str, size: int, limit: int) -> Task:
    """A task loaded once per process (a run evaluates its benchmarks at every evaluation)."""
    return load_task(path, size, limit)


def load_tasks(cfg: RunConfig, paths: list[str], limit: int = 0) -> list[Task]:
    """Every task, checked (a malformed file is one error before anything runs); names must differ."""
    tasks = [cached_task(str(Path(p).resolve()), image_size(cfg), limit) for p in paths]
    names = [t.name for t in tasks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"benchmarks: two tasks are named '{repeated[0]}' (a task's name is its file or directory "
                        "name); rename one")
    return tasks


def check_benchmarks(cfg: RunConfig) -> None:
    """Load `eval.benchmarks` and build every prompt: a malformed file, or text the run's tokenizer cannot
    encode, is one error before training starts."""
    prompts = Prompts(cfg)
    for path, task in zip(cfg.eval.benchmarks, load_tasks(cfg, cfg.eval.benchmarks, cfg.eval.bench_limit),
                          strict=True):
        try:
            if isinstance(task, Classification):
                prompts.classes(task.class_names, task.prompt)
            elif isinstance(task, MultipleChoice):
                for item in task.items:
                    prompts.choice(item, list(range(len(item.options))))
        except ValueError as e:
            raise UserError(f"config key 'eval.benchmarks': '{path}': {e}") from None


def run_benchmarks(model: UnifiedModel, cfg: RunConfig, paths: list[str], limit: int = 0,
                   shard: Shard = ONE_PROCESS) -> dict[str, float]:
    prompts = Prompts(cfg)
    out: dict[str, float] = {}
    for path, task in zip(paths, load_tasks(cfg, paths, limit), strict=True):
        try:
            if isinstance(task, Classification):
                metrics = evaluate_classification(model, cfg, prompts, task, shard)
            elif isinstance(task, Captioning):
                metrics = evaluate_captioning(model, cfg, prompts, task, shard)
            else:
                metrics = evaluate_choice(model, prompts, task, shard)
        except ValueError as e:  # text the run's tokenizer cannot encode (the miniature vocabulary is closed)
            raise UserError(f"benchmark '{path}': {e}") from None
        out.update({f"bench/{task.name}/{k}": v for k, v in metrics.items()})
    return out
