"""Meta-device initialisation: ranks other than 0 build the pretrained backbones without values, every rank shards
the model on meta, and rank 0's model fills the shards; the result is exactly the one-process model."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.distributed.checkpoint.state_dict import get_model_state_dict

from study import distributed
from study.distributed import FULL
from study.model import meta_init
from study.model.unified import UnifiedModel
from tests.conftest import free_port, tiny_config
from unihetero.cli import main


def _config(tiny_hf: dict[str, str], shards: Path, *extra: str):
    return tiny_config("model.backbone=hf", f"model.vision_path={tiny_hf['dinov2']}",
                       f"model.llm_path={tiny_hf['qwen2']}", f"model.vae_path={tiny_hf['vae']}",
                       "objective.target=semantic_input+pixel", "data.source=shards", f"data.shards={shards}",
                       "data.unique_samples=32", "train.parallel=fsdp", *extra)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("meta") / "shards"
    assert main(["data", "shards", str(out), "--world", "48", "--config", "tiny", "--shard-size", "16"]) == 0
    return out


def test_other_ranks_build_the_backbones_without_values_and_keep_buffers_and_ties(tiny_hf, shards):
    cfg = _config(tiny_hf, shards)
    model = UnifiedModel(cfg, weights=False)
    on_meta = {name for name, p in model.named_parameters() if p.is_meta}
    backbones = {name for name, _ in model.named_parameters() if name.startswith(("encoder.", "llm.", "latents."))}
    assert on_meta == backbones and backbones
    assert not any(b.is_meta for b in model.buffers())  # rotary frequencies, normalisation constants: real
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in
                                                                  UnifiedModel(cfg).state_dict().items()}
    meta_init.to_meta(model)
    assert all(p.is_meta for p in model.parameters())
    assert model.llm.lm_head.weight is model.llm.tok_embed.weight  # tied embeddings stay tied


def _sharded_worker(rank: int, world: int, port: int, cfg, out: str) -> None:
    from study.inputs import prepare
    from study.vlm import build_parallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    ranks, _ = distributed.setup(cfg)
    torch.manual_seed(0)
    assert distributed.meta_initialised(cfg, ranks)
    model, _ = build_parallel(prepare(cfg, Path(out)), ranks)
    local = sum(p.to_local().numel() for p in model.parameters())
    state = get_model_state_dict(model, options=FULL)
    if rank == 0:
        torch.save(state, Path(out, "state.pt"))
    Path(out, f"{rank}.json").write_text(json.dumps({"local": local}))
    sys.stderr.flush()
    os._exit(0)  # skip the teardown where FSDP2 over gloo may abort (tests/test_distributed.py)


@pytest.mark.slow
def test_two_fsdp_ranks_initialise_on_meta_to_the_one_process_model(tiny_hf, shards, tmp_path):
    cfg = _config(tiny_hf, shards, "model.freeze_encoder=true")
    torch.manual_seed(0)
    reference = UnifiedModel(cfg)
    mp.spawn(_sharded_worker, args=(2, free_port(), cfg, str(tmp_path)), nprocs=2)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    expected = reference.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    total = sum(p.numel() for p in reference.parameters())
    for rank in range(2):  # each rank holds about half of every tensor, never the whole model
        assert json.loads((tmp_path / f"{rank}.json").read_text())["local"] < 0.6 * total
