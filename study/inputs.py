"""The local inputs a run reads (backbone directories, the shard index and its split), checked before it writes
anything."""

from __future__ import annotations

from pathlib import Path

from study.config import RunConfig
from study.errors import UserError


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
        from study.data.shards import split

        split(cfg)  # held-out shards that leave none for training, or a D beyond the training samples
    if cfg.eval.benchmarks:
        from study.evaluation.bench.run import check_benchmarks

        check_benchmarks(cfg)
