"""The one way to make a run's world: `build_world(cfg.data)`, called once where a run (or a tool) starts, the
world then handed to everything that renders images for it (training, evaluation, probes, encoder pretraining,
benchmarks, shard writing). Nothing else constructs a world class, so no consumer can render another world than
its run's (a test reads the code base for it)."""

from __future__ import annotations

from study.config import DataConfig
from study.data.world import World
from study.data.world_v2 import WorldV2


def build_world(cfg: DataConfig) -> World:
    """The world of `data.world_version`: 1 (`study.data.world`) or 2 (`study.data.world_v2`)."""
    return WorldV2(cfg) if cfg.world_version == 2 else World(cfg)
