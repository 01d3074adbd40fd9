"""A run's benchmarks: each task file evaluated and its metrics named `bench/<task name>/<metric>`."""

from __future__ import annotations

import functools
from pathlib import Path

from study.config import RunConfig
from study.data.shards import image_size
from study.errors import UserError
from study.evaluation.bench.captioning import evaluate_captioning
from study.evaluation.bench.classification import evaluate_classification
from study.evaluation.bench.items import Captioning, Classification, MultipleChoice, Task
from study.evaluation.bench.multiple_choice import evaluate_choice
from study.evaluation.bench.prompts import Prompts
from study.evaluation.bench.scoring import ONE_PROCESS, Shard
from study.evaluation.bench.tasks import load_task
from study.model.unified import UnifiedModel


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
                    for order in item.asked():
                        prompts.choice(item, order)
        except ValueError as e:
            raise UserError(f"config key 'eval.benchmarks': '{path}': {e}") from None


def run_benchmarks(model: UnifiedModel, cfg: RunConfig, paths: list[str], limit: int = 0,
                   shard: Shard = ONE_PROCESS) -> dict[str, float]:
    """Every benchmark file's metrics as 'bench/<task>/<metric>'; text the run's tokenizer cannot encode is an error
    naming the file."""
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
