"""Invariant: several ranks (gloo on CPU) and micro-batches train like one process with the same global batch, and
a run resumed on another number of ranks ends where the unbroken one does.

Tolerances are `tests/rank_runs.py`'s (losses, grad norms, final weights, evaluation metrics). One config
exercises every random draw of a step at once: semantic_input + pixel with the diffusion head (its timesteps
and noise), per-sample truncated-normal masking with loss on masked positions (shards hold unequal numbers of
caption tokens and generation positions), the caption read from the clean sequence (a second forward) and the
semantic loss on detached inputs (a third); the final evaluation runs every option the presets use
(inference scaling included), and a collective that one rank skips fails within a minute.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from study.config import load_config
from study.data.batch import make_batch
from study.data.loader import held_out_indices
from study.data.worlds import build_world
from study.distributed import strategy
from study.draws import Draws, diffusion_draws
from study.errors import UserError
from study.masking import sample_mask
from study.model.unified import UnifiedModel
from study.objectives import loss_terms, unit_counts
from study.runstore import RunStore
from study.train import train
from study.vlm import weighted_losses
from tests.conftest import free_port, tiny_config
from tests.rank_runs import (
    OVERRIDES,
    assert_same_evaluations,
    assert_same_training,
    rank_config,
    spawn_ranks,
)

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The 1-rank run everything is compared with."""
    return train(rank_config(), tmp_path_factory.mktemp("one") / "run", quiet=True)


def test_shard_losses_add_up_to_the_batch_losses():
    """Every draw made for the whole batch and sliced (the mask, the diffusion timesteps and noise): the shards'
    weighted losses add up to the batch's."""
    cfg = rank_config()
    torch.manual_seed(0)
    model = UnifiedModel(cfg)
    batch = make_batch(build_world(cfg.data), held_out_indices(0, 8))
    gen = torch.Generator().manual_seed(1)
    mask = sample_mask(cfg.masking, 8, model.num_visual, gen)
    draws = Draws(8, mask, diffusion_draws(model, cfg, 8, gen, torch.device("cpu")), cfg.objective.diffusion_batch_mul)
    whole = loss_terms(model, cfg, batch.images, batch.tokens, mask, draws.diffusion)
    totals = unit_counts(model, cfg, batch.tokens, mask)
    parts, units = [], []
    for rows in (slice(0, 4), slice(4, 8)):
        part = draws.slice(rows.start, rows.stop)
        units.append(unit_counts(model, cfg, batch.tokens[rows], part.mask))
        shares = {k: units[-1][k] / totals[k] for k in totals}
        parts.append(weighted_losses(loss_terms(model, cfg, batch.images[rows], batch.tokens[rows], part.mask,
                                                part.diffusion), shares, cfg))
    assert units[0]["caption"] != units[1]["caption"] and units[0]["pixel"] != units[1]["pixel"]  # unequal shards
    for key in whole:
        torch.testing.assert_close(parts[0][key] + parts[1][key], whole[key], atol=1e-6, rtol=1e-6)
    plain_mean = (parts[0]["caption"] / (units[0]["caption"] / totals["caption"]) +
                  parts[1]["caption"] / (units[1]["caption"] / totals["caption"])) / 2
    assert abs(plain_mean - whole["caption"]) > 1e-4  # averaging shard means would not match


@pytest.mark.slow
def test_two_ranks_under_torchrun_match_one_rank(reference, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "unihetero.cli", "train", "tiny", *OVERRIDES, "--runs-dir", str(tmp_path), "--quiet"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = tmp_path.iterdir()
    assert_same_training(run, reference)
    status = RunStore(run).status()
    assert status["state"] == "completed" and status["world_size"] == 2
    # rank 0 alone writes: one record per evaluation, as in the 1-rank run, each rank evaluating its share
    assert_same_evaluations(run, reference)


@pytest.mark.slow
def test_fsdp_two_ranks_match_one_rank(reference, tmp_path):
    """Training, and the evaluations: each rank evaluates its share of the held-out images on the live sharded
    model, on its device, and no model is built for it (each rank builds one, the one it trains)."""
    run = spawn_ranks(rank_config("train.parallel=fsdp"), tmp_path / "fsdp")
    assert_same_training(run, reference)
    assert RunStore(run).status()["world_size"] == 2
    assert [(tmp_path / f"fsdp.built.{rank}").read_text() for rank in range(2)] == ["1", "1"]
    assert_same_evaluations(run, reference)


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "world"), [(("train.grad_accum=2",), 2),
                                                  (("train.grad_accum=2", "train.fsdp_replicas=2"), 4)])
def test_fsdp_micro_batches_and_hybrid_sharding_match_one_rank(reference, tmp_path, overrides, world):
    """FSDP reduce-scatters every micro-batch; hybrid sharding (2 replicas x 2 shards) all-reduces across replicas
    on the last one only: both train as one rank does."""
    run = spawn_ranks(rank_config("train.parallel=fsdp", *overrides), tmp_path / "run", world=world)
    assert_same_training(run, reference)
    assert RunStore(run).status()["world_size"] == world


@pytest.mark.slow
def test_on_shards_two_ranks_and_a_resume_on_one_match_one_rank(tmp_path):
    """The global sample order: 2 ranks read the batches 1 rank reads, and a 2-rank checkpoint resumed on 1 rank
    goes on reading where it stopped (96 samples of a 48-sample subset: the second epoch starts mid-run)."""
    from unihetero.cli import main

    assert main(["data", "shards", str(tmp_path / "shards"), "--world", "64", "--config", "tiny",
                 "--shard-size", "16"]) == 0
    cfg = rank_config("data.source=shards", f"data.shards={tmp_path / 'shards'}", "data.unique_samples=48",
                  "data.shuffle_buffer=8")
    one = train(cfg, tmp_path / "one", quiet=True)
    assert_same_training(spawn_ranks(cfg, tmp_path / "two"), one)
    resumed = spawn_ranks(cfg, tmp_path / "resumed", stop_after=3)
    train(cfg, resumed, quiet=True)
    assert RunStore(resumed).status()["world_size"] == 1
    assert_same_training(resumed, one)


@pytest.mark.slow
def test_checkpoint_of_two_ranks_resumes_on_one(reference, tmp_path):
    run = spawn_ranks(rank_config(), tmp_path / "run", stop_after=3)
    assert RunStore(run).status()["state"] == "running" and RunStore(run).status()["world_size"] == 2
    (checkpoint,) = RunStore(run).checkpoints()  # several ranks: sharded, each rank writing its own file
    assert checkpoint.name == "step_00000003"
    assert {"__0_0.distcp", "__1_0.distcp"} <= {p.name for p in checkpoint.iterdir()}
    train(rank_config(), run, quiet=True)  # the same run, now one process
    assert RunStore(run).status()["world_size"] == 1
    assert_same_training(run, reference)
    assert_same_evaluations(run, reference)


@pytest.mark.slow
def test_checkpoint_of_one_rank_resumes_on_two(reference, tmp_path):
    run = tmp_path / "run"
    train(rank_config(), run, until_step=3, quiet=True)
    assert RunStore(run).status()["world_size"] == 1
    spawn_ranks(rank_config(), run)  # the same run, now two ranks
    assert RunStore(run).status()["world_size"] == 2
    assert_same_training(run, reference)
    assert_same_evaluations(run, reference)


@pytest.mark.parametrize("override", ["train.grad_accum=2", "train.grad_accum=4",
                                      "train.activation_checkpointing=true"])
def test_one_rank_variants_match(reference, tmp_path, override):
    run = train(rank_config(override), tmp_path / "run", quiet=True)
    assert_same_training(run, reference)


@pytest.mark.parametrize(("overrides", "env", "message"), [
    (["train.grad_accum=3"], {}, "'train.batch_size': 16 is not divisible by 1 ranks x train.grad_accum 3"),
    (["train.parallel=none"], {"WORLD_SIZE": "2"}, "'train.parallel': none trains one process"),
    (["eval.num_images=4", "train.batch_size=40"], {"WORLD_SIZE": "5"}, "'eval.num_images': 4 held-out images"),
    (["train.parallel=fsdp", "train.fsdp_replicas=3"], {"WORLD_SIZE": "2"},
     "'train.fsdp_replicas': 3 replicas do not divide the 2 ranks"),
    (["train.device=cuda"], {}, "'train.device': cuda asked for but no CUDA device"),
])
def test_runtime_config_errors_come_before_anything_is_written(tmp_path, monkeypatch, overrides, env, message):
    if "train.device=cuda" in overrides and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match=message):
        train(rank_config(*overrides), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_parallel_auto_shards_pretrained_backbones_and_replicates_the_miniature():
    hf = ("model.backbone=hf", "model.vision_path=/v", "model.llm_path=/l", "data.source=shards", "data.shards=/s")
    assert [strategy(tiny_config(*hf)), strategy(tiny_config())] == ["fsdp", "ddp"]
    assert strategy(tiny_config(*hf, "train.parallel=ddp")) == "ddp"
    assert tiny_config("train.parallel=fsdp").run_id() == tiny_config().run_id()  # a layout, not the run


@pytest.mark.parametrize("n, world", [(5, 2), (5, 3), (21, 2), (2048, 8), (7, 1)])
def test_evaluation_rows_are_dealt_as_tensor_split_deals_them(n, world):
    from study.evaluation.ranks import Split

    blocks = [torch.arange(n)[Split(rank, world).rows(n)] for rank in range(world)]
    assert [b.tolist() for b in blocks] == [b.tolist() for b in torch.tensor_split(torch.arange(n), world)]


def test_process_group_timeout_is_a_config_key(monkeypatch):
    import datetime

    from study import distributed

    seen = {}
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *a, **k: seen.update(k))
    distributed.setup(load_config("tiny", ["train.dist_timeout_min=90", "train.parallel=ddp"]))
    assert seen["timeout"] == datetime.timedelta(minutes=90)


def _fsdp_model(rank: int, world: int, port: int, *overrides: str):
    """This rank's config, FSDP-wrapped model and loss module, and a held-out batch of 8, in a spawned worker."""
    from study import distributed
    from study.vlm import LossModule

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    cfg = rank_config("train.parallel=fsdp", *overrides)
    ranks, _ = distributed.setup(cfg)
    torch.manual_seed(0)
    model = UnifiedModel(cfg)
    loss_fn = distributed.parallelize(LossModule(model, cfg), model, cfg, ranks)
    return cfg, model, loss_fn, make_batch(build_world(cfg.data), held_out_indices(0, 8))


def _micro_batch_worker(rank: int, world: int, port: int, out: str) -> None:
    import json

    from torch.distributed.tensor import DTensor

    from study import distributed

    cfg, model, loss_fn, batch = _fsdp_model(rank, world, port, "train.grad_accum=2")
    mask = sample_mask(cfg.masking, 8, model.num_visual, torch.Generator().manual_seed(1))
    rows = slice(2 * rank, 2 * rank + 2)  # this rank's first micro-batch of a global batch of 8
    with distributed.gradient_sync(loss_fn, sync=False):
        noise = diffusion_draws(model, cfg, 2, None, torch.device("cpu"))
        loss_fn(batch.images[rows], batch.tokens[rows], mask[rows], noise)["total"].backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    record = {"trainable": len(trainable), "sharded_grads": sum(isinstance(p.grad, DTensor) for p in trainable),
              "grad_elements": sum(p.grad.to_local().numel() for p in trainable if p.grad is not None),
              "shard_elements": sum(p.to_local().numel() for p in trainable),
              "full_elements": sum(p.numel() for p in trainable)}
    Path(out, f"{rank}.json").write_text(json.dumps(record))
    sys.stderr.flush()
    os._exit(0)  # as below: skip the teardown where FSDP2 over gloo may abort


@pytest.mark.slow
def test_fsdp_keeps_only_gradient_shards_between_micro_batches(tmp_path):
    """After a micro-batch that is not a step's last, every gradient is already this rank's reduced shard: no
    unsharded gradient waits for the last micro-batch."""
    import json

    mp.spawn(_micro_batch_worker, args=(2, free_port(), str(tmp_path)), nprocs=2)
    for rank in range(2):
        seen = json.loads((tmp_path / f"{rank}.json").read_text())
        assert seen["sharded_grads"] == seen["trainable"] > 0
        assert seen["grad_elements"] == seen["shard_elements"] < 0.6 * seen["full_elements"]


def _precision_worker(rank: int, world: int, port: int, out: str) -> None:
    import json

    from study import distributed

    # called outside the trainer's autocast: the MSE pixel head, whose inputs FSDP casts to bf16 itself
    cfg, model, loss_fn, batch = _fsdp_model(rank, world, port, "train.precision=bf16", "objective.pixel_head=mse")
    seen = []
    block = distributed.transformer_blocks(model)[0]
    block.register_forward_pre_hook(lambda module, args: seen.append(str(next(module.parameters()).dtype)))
    losses = loss_fn(batch.images[rank * 4:(rank + 1) * 4], batch.tokens[rank * 4:(rank + 1) * 4], None, None)
    losses["total"].backward()
    grads = {str(p.grad.dtype) for p in model.parameters() if p.grad is not None}
    params = {str(p.dtype) for p in model.parameters()}
    record = {"forward": seen, "grads": sorted(grads), "params": sorted(params)}
    Path(out, f"{rank}.json").write_text(json.dumps(record))
    sys.stderr.flush()
    os._exit(0)  # as above: skip the teardown where FSDP2 over gloo may abort


@pytest.mark.slow
def test_fsdp_under_bf16_computes_in_bf16_and_keeps_fp32_shards_and_gradients(tmp_path):
    import json

    mp.spawn(_precision_worker, args=(2, free_port(), str(tmp_path)), nprocs=2)
    for rank in range(2):
        seen = json.loads((tmp_path / f"{rank}.json").read_text())
        assert seen["forward"] == ["torch.bfloat16"]  # gathered for the forward in bf16
        assert seen["params"] == ["torch.float32"] and seen["grads"] == ["torch.float32"]
