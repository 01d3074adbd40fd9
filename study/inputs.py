"""What a run is built from, made once where it starts (`prepare`): the local inputs checked (backbone
directories, the shard index and its split, benchmark files) before anything is written, its upstream references
resolved (each upstream status read and its file hashed once), and its world built. Everything after takes these
from here: there is no second way to make a run's world or to resolve its references."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from study import upstream
from study.config import RunConfig
from study.data.shards import split
from study.data.world import World
from study.data.worlds import build_world
from study.errors import UserError
from study.evaluation.bench.run import check_benchmarks


@dataclass(frozen=True)
class RunInputs:
    """`cfg` is the run's config as written (its hash is the run id); `resolved` the same with each upstream
    reference replaced by the file it names; `world` the run's world (None for a run on shards)."""

    cfg: RunConfig
    upstream: upstream.Upstream
    world: World | None

    @property
    def resolved(self) -> RunConfig:
        return self.upstream.cfg


def check_inputs(cfg: RunConfig) -> None:
    """Raise one UserError naming the config key and the path of the first missing input."""
    m, d = cfg.model, cfg.data
    dirs = []
    if m.backbone == "hf":
        dirs += [("model.vision_path", m.vision_path), ("model.llm_path", m.llm_path)]
        if "pixel" in cfg.objective.parts():
            dirs.append(("model.vae_path", m.vae_path))
    for key, path in dirs:
        if not Path(path).is_dir():
            raise UserError(f"config key '{key}': '{path}' is not a directory")
    if d.source == "shards":
        if not (Path(d.shards) / "index.json").is_file():
            raise UserError(f"config key 'data.shards': '{d.shards}' holds no index.json")
        split(cfg)  # held-out shards that leave none for training, or a D beyond the training samples
    if cfg.eval.benchmarks:
        check_benchmarks(cfg)


def prepare(cfg: RunConfig, runs_dir: Path) -> RunInputs:
    """Check the run's inputs, resolve its upstream references in `runs_dir` and build its world: once per run."""
    check_inputs(cfg)
    world = build_world(cfg.data) if cfg.data.source == "world" else None
    return RunInputs(cfg, upstream.resolve(cfg, runs_dir), world)
