import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from study.checkpoint import load_latest
from study.data.sample_order import GlobalOrder, TarSamples
from study.data.shard_writer import world_samples, write_shards
from study.data.shards import ERRORS, ShardReader, ShardStream, read_index, split
from study.data.worlds import build_world
from study.errors import UserError
from study.runstore import RunStore, read_jsonl
from study.train import train
from tests.conftest import tiny_config
from unihetero.cli import main

SHARD_SIZES = (8, 8, 8, 6, 10)  # the last shard is held out


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    cfg = tiny_config()
    samples = list(world_samples(build_world(cfg.data), sum(SHARD_SIZES)))
    start, names = 0, []
    for i, size in enumerate(SHARD_SIZES):  # uneven shards: written one at a time, then one index
        write_shards(iter(samples[start:start + size]), out / "tmp", size)
        (out / "tmp" / "shard-000000.tar").rename(out / f"uneven-{i}.tar")
        names.append({"name": f"uneven-{i}.tar", "samples": size})
        start += size
    (out / "index.json").write_text(json.dumps({"shards": names}))
    return out


def _cfg(shard_dir, *overrides):
    return tiny_config("data.source=shards", f"data.shards={shard_dir}", "data.shuffle_buffer=5",
                       "train.batch_size=4", *overrides)


def _positions(order: GlobalOrder, first: int, n: int) -> list[tuple[str, int]]:
    return [(part.path.name, index) for part, index in map(order.locate, range(first, first + n))]


def _global_batch(cfg, step: int, world: int, workers: int) -> torch.Tensor:
    """Global batch `step` as `world` ranks of `workers` DataLoader workers read it, ranks concatenated."""
    images = []
    for rank in range(world):
        loader = torch.utils.data.DataLoader(ShardReader(cfg, 0, rank, world, workers), batch_size=None,
                                             num_workers=workers)
        images.append(next(b for i, b in enumerate(loader) if i == step).images)
    return torch.cat(images)


def test_subset_is_first_d_samples_in_index_order_and_epochs_repeat_it(shard_dir):
    cfg = _cfg(shard_dir, "data.unique_samples=19")
    train, held_out = split(cfg)
    assert [p.limit for p in train] == [8, 8, 3] and [p.limit for p in held_out] == [10]
    expected = {(p.path.name, i) for p in train for i in range(p.limit)}
    order = GlobalOrder(train, seed=0, window=5)
    epochs = [_positions(order, 19 * e, 19) for e in range(3)]
    for epoch in epochs:
        assert set(epoch) == expected and len(epoch) == 19  # every epoch is the D-subset, once each
    assert epochs[0] != epochs[1] != epochs[2]  # in a fresh order
    assert _positions(GlobalOrder(train, 0, 1), 0, 19)[:3] == [(train[order._shards(0)[0][0]].path.name, i)
                                                                for i in range(3)]  # window 1: shard order
    with pytest.raises(UserError, match="data.unique_samples"):
        split(_cfg(shard_dir, "data.unique_samples=31"))


def test_reading_is_deterministic_and_seeded(shard_dir):
    cfg = _cfg(shard_dir, "data.unique_samples=30")
    a, b = iter(ShardReader(cfg, 0, 0, 1, 0)), iter(ShardReader(cfg, 0, 0, 1, 0))
    for _ in range(10):
        x, y = next(a), next(b)
        assert torch.equal(x.images, y.images) and torch.equal(x.tokens, y.tokens)
    train = split(cfg)[0]
    assert _positions(GlobalOrder(train, 0, 5), 0, 30) != _positions(GlobalOrder(train, 1, 5), 0, 30)


def test_global_batches_do_not_depend_on_ranks_or_workers(shard_dir):
    cfg = _cfg(shard_dir, "data.unique_samples=30", "train.batch_size=12")
    for step in (0, 3):  # the fourth global batch crosses into the second epoch
        one = _global_batch(cfg, step, world=1, workers=0)
        assert one.shape[0] == 12
        for world, workers in ((2, 0), (3, 2), (4, 1)):
            assert torch.equal(_global_batch(cfg, step, world, workers), one), (step, world, workers)


def test_resumed_stream_continues_exactly_with_two_workers(shard_dir, tmp_path):
    cfg = _cfg(shard_dir, "data.unique_samples=30", "data.workers=2")
    whole = ShardStream(cfg, 0, tmp_path)
    batches = [b for _, b in zip(range(7), whole, strict=False)]
    whole.close()
    resumed = ShardStream(cfg, 3, tmp_path)
    tail = [b for _, b in zip(range(4), resumed, strict=False)]
    resumed.close()
    for a, b in zip(batches[3:], tail, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.tokens, b.tokens)
    ranked = next(iter(ShardReader(cfg, 0, 1, 2, 0)))  # rank 1 of 2 reads half the global batch
    assert ranked.images.shape[0] == 2


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_folder_shards_corrupt_sample_is_skipped_and_counted(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):
        (folder / f"img{i:02d}.png").write_bytes(b"not an image" if i == 5 else _png(i))
        (folder / f"img{i:02d}.txt").write_text("small red circle at top .")
    (folder / "uncaptioned.png").write_bytes(_png(99))
    assert main(["data", "shards", str(tmp_path / "out"), "--images", str(folder), "--shard-size", "4"]) == 0
    assert [p.limit for p in read_index(str(tmp_path / "out"))] == [4, 4, 4]
    cfg = _cfg(tmp_path / "out", "data.unique_samples=8", "data.shuffle_buffer=1")
    run = tmp_path / "run"
    run.mkdir()
    stream = ShardStream(cfg, 0, run)
    sizes = [len(b.images) for _, b in zip(range(4), stream, strict=False)]
    stream.close()
    assert sorted(sizes) == [3, 3, 4, 4]  # each epoch of 8 slots loses the corrupt sample
    errors = read_jsonl(run / ERRORS)
    assert [e["key"] for e in errors] == ["000000005", "000000005"] and {e["step"] for e in errors} <= {1, 2, 3, 4}
    assert all("UnidentifiedImageError" in e["reason"] for e in errors)
    first = next(iter(ShardReader(cfg, 0, 0, 1, 0)))
    assert first.images.shape[1:] == (3, 16, 16) and first.images.dtype == torch.uint8  # bytes until the device
    assert first.images.float().std() > 10  # real pixels, not a blank


def test_truncated_shard_is_counted_not_fatal(shard_dir, tmp_path):
    data = (shard_dir / "uneven-1.tar").read_bytes()
    broken = tmp_path / "broken.tar"
    broken.write_bytes(data[: len(data) // 2])
    samples = TarSamples()
    readable = [samples.read(broken, i) for i in range(8)]
    good = [r for r in readable if r[2] is None]
    assert 0 < len(good) < 8 and [r[0] for r in good] == [f"{i:09d}" for i in range(len(good))]
    assert all(r[1] is None and "unreadable tar" in r[2] for r in readable[len(good):])
    key, sample, failure = samples.read(shard_dir / "uneven-2.tar", 7)
    assert failure is None and key == "000000007" and set(sample) == {"png", "txt"}  # random access, any index
    assert samples.read(shard_dir / "uneven-2.tar", 8)[2] == "shard has 8 samples, not 9"


def test_missing_shards_fail_before_anything_is_written(tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["train", "tiny", "data.source=shards", f"data.shards={tmp_path / 'none'}", "--runs-dir", str(runs)])
    assert code == 2 and not runs.exists()
    assert "config key 'data.shards'" in capsys.readouterr().err
    with pytest.raises(UserError, match="data.shards"):
        tiny_config("data.source=shards")


@pytest.mark.parametrize("override, key", [("data.held_out_shards=5", "data.held_out_shards"),
                                           ("data.unique_samples=31", "data.unique_samples")])
def test_a_split_without_enough_training_data_fails_before_anything_is_written(shard_dir, tmp_path, capsys,
                                                                              override, key):
    runs = tmp_path / "runs"
    code = main(["train", "tiny", "data.source=shards", f"data.shards={shard_dir}", "train.batch_size=4", override,
                 "--runs-dir", str(runs)])
    assert code == 2 and not runs.exists()
    assert f"config key '{key}'" in capsys.readouterr().err


def test_interrupted_shard_run_resumes_to_the_same_weights(shard_dir, tmp_path):
    cfg = _cfg(shard_dir, "data.unique_samples=30", "train.samples_seen=48", "train.checkpoint_every=4",
               "train.log_every=2")  # 12 steps: the second and third epochs start mid-run
    whole = train(cfg, tmp_path / "whole", quiet=True)
    part = tmp_path / "part"
    train(cfg, part, quiet=True, until_step=8)
    train(cfg, part, quiet=True)
    a, b = load_latest(RunStore(whole))["model"], load_latest(RunStore(part))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert RunStore(whole).records("eval.jsonl") == RunStore(part).records("eval.jsonl")
