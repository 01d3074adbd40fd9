"""Invariant: one world per run. Every consumer of a run's images (the training stream, the evaluations with their
zero-shot questions, probes and inference scaling, encoder pretraining and its probes, the world benchmarks and
the shard writer) sees exactly the images the run's own world renders for the same world index, for world v1 and
world v2 alike.

Images are caught where they enter the vision encoder (so the test does not depend on how a consumer obtains
them) and looked up among the reference renderings of the index ranges the run may read. A consumer that renders
from another world (world-v2 runs evaluated on v1 renders) finds no match."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from study.data.loader import held_out_indices, training_stream
from study.data.world import PRETRAIN_START
from study.data.worlds import build_world
from study.evaluation.bench import world_tasks
from study.model.vit import VisionEncoder
from study.train import train
from tests.conftest import tiny_config

WORLDS = {"v1": [], "v2": ["data.world_version=2", "data.caption_coverage=1.0", "data.object_scale=1.4"]}
SMALL = ["data.unique_samples=48", "train.samples_seen=64", "train.warmup_steps=2", "eval.num_images=8",
         "eval.probe_images=24", "eval.every=2"]
BLANK = 0.5  # the value self-distillation writes into the patches it hides from the student


def reference(cfg, indices) -> np.ndarray:
    """The run's own world's images (N, H, W, 3) for `indices`."""
    return build_world(cfg.data).batch(np.asarray(indices))[0]


def held_out_and_training(cfg) -> np.ndarray:
    e = cfg.eval
    return np.concatenate([reference(cfg, held_out_indices(0, e.num_images + e.probe_images)),
                           reference(cfg, np.arange(cfg.data.unique_samples))])


def unmatched(seen: list[np.ndarray], references: np.ndarray, ignore_blank: bool = False) -> int:
    """How many of the `seen` images (H, W, 3) equal no reference image (pixels at BLANK ignored if asked)."""
    flat = references.reshape(len(references), -1)
    missing = 0
    for image in seen:
        x = image.reshape(-1)
        keep = x != BLANK if ignore_blank else slice(None)
        missing += not (flat[:, keep] == x[keep]).all(1).any()
    return missing


def assert_own_world(seen: list[np.ndarray], references: np.ndarray, ignore_blank: bool = False) -> None:
    missing = unmatched(seen, references, ignore_blank)
    assert missing == 0, f"{missing} of {len(seen)} images are not the run's own world's"


@pytest.fixture
def encoder_inputs(monkeypatch) -> list[np.ndarray]:
    """Every image any vision encoder is given, as (H, W, 3) float arrays."""
    seen: list[np.ndarray] = []
    forward = VisionEncoder.forward

    def spy(self, images):
        seen.extend(images.detach().float().permute(0, 2, 3, 1).cpu().numpy())
        return forward(self, images)

    monkeypatch.setattr(VisionEncoder, "forward", spy)
    return seen


@pytest.mark.parametrize("world", WORLDS)
def test_training_and_every_evaluation_see_the_runs_own_world(tmp_path, world, encoder_inputs):
    cfg = tiny_config(*WORLDS[world], *SMALL, "objective.target=semantic_input+pixel", "model.patch_size=4")
    train(cfg, tmp_path / "run", quiet=True)
    assert len(encoder_inputs) > 4 * 16  # training batches, held-out, probe, generation and view images
    assert_own_world(encoder_inputs, held_out_and_training(cfg))
    stream = training_stream(cfg, build_world(cfg.data), 0, tmp_path / "run")
    batch = next(iter(stream))
    stream.close()
    assert_own_world(list(batch.images.permute(0, 2, 3, 1).numpy()), reference(cfg, np.arange(48)))


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("task", ["contrastive", "self_distill"])
def test_encoder_pretraining_and_its_probes_see_the_runs_own_world(tmp_path, world, task, encoder_inputs):
    cfg = tiny_config(*WORLDS[world], *SMALL, f"objective.task={task}")
    train(cfg, tmp_path / "stage", quiet=True)
    e = cfg.eval
    references = np.concatenate([reference(cfg, held_out_indices(0, e.num_images + e.probe_images)),
                                 reference(cfg, PRETRAIN_START + np.arange(cfg.data.unique_samples))])
    assert len(encoder_inputs) > 4 * 16
    assert_own_world(encoder_inputs, references, ignore_blank=task == "self_distill")


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255


def _quantised(images: np.ndarray) -> np.ndarray:
    return (images * 255).round().astype(np.float32) / 255


@pytest.mark.parametrize("world", WORLDS)
def test_world_benchmarks_and_shards_are_written_from_the_runs_own_world(tmp_path, world):
    from study.data.shard_writer import world_samples, write_shards

    cfg = tiny_config(*WORLDS[world])
    held_out = _quantised(reference(cfg, held_out_indices(0, 6)))
    world = build_world(cfg.data)
    benchmark = [_png(png) for png, _ in world_tasks.world_images(world, 6)]
    assert_own_world(benchmark, held_out)

    index = write_shards(world_samples(world, 20), tmp_path / "shards", shard_size=8)
    written = []
    for shard in index["shards"]:
        with tarfile.open(tmp_path / "shards" / shard["name"]) as tar:
            written += [_png(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".png")]
    assert len(written) == 20
    assert_own_world(written, _quantised(reference(cfg, np.arange(20))))


def test_the_two_worlds_differ_so_the_checks_above_can_fail():
    """A v1 image is never a v2 image of the same (or any nearby) index: the lookups above would catch a mix-up."""
    v1, v2 = tiny_config(*WORLDS["v1"]), tiny_config(*WORLDS["v2"])
    indices = held_out_indices(0, 16)
    assert unmatched(list(reference(v1, indices)), reference(v2, indices)) == 16


def test_only_the_factory_builds_a_world():
    """No module of the toolkit constructs a world class itself: each run builds its world once, through the
    factory, and hands it down (a second construction is how v2 runs came to be evaluated on v1 renders)."""
    import ast

    root = Path(__file__).parents[1]
    classes = {"World", "WorldV2"}
    offenders = []
    for package in ("study", "sweeps", "analysis", "reports", "unihetero", "benchmarks", "scripts"):
        for path in sorted((root / package).rglob("*.py")):
            if path.name in ("world.py", "world_v2.py", "worlds.py"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                    if name in classes:
                        offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
