import socket

import pytest

from study.config import RunConfig, load_config


@pytest.fixture
def tiny() -> RunConfig:
    return load_config("tiny")


def tiny_config(*overrides: str) -> RunConfig:
    return load_config("tiny", list(overrides))


# the fields of a metrics record that an exact resume or another backend must reproduce (not times or rates)
DETERMINISTIC = ("step", "samples_seen", "tokens_seen", "flops", "lr", "loss/caption", "loss/semantic",
                 "loss/pixel", "loss/total", "grad_norm")


def deterministic(records: list[dict]) -> list[dict]:
    """Each metrics record cut to its DETERMINISTIC fields."""
    return [{k: r[k] for k in DETERMINISTIC if k in r} for r in records]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> dict[str, str]:
    """Tiny random transformers/diffusers checkpoints, written once per session by `unihetero hf tiny`."""
    from unihetero.cli import main

    out = tmp_path_factory.mktemp("tiny_hf")
    assert main(["hf", "tiny", str(out)]) == 0
    return {name: str(out / name) for name in ("dinov2", "siglip", "qwen2", "llama", "vae")}


def hf_config(tiny_hf: dict[str, str], *overrides: str, vision: str = "dinov2", llm: str = "qwen2") -> RunConfig:
    """The tiny preset on the `tiny_hf` backbones (`vision` and `llm` name two of them) and the KL VAE."""
    return load_config("tiny", ["model.backbone=hf", f"model.vision_path={tiny_hf[vision]}",
                                f"model.llm_path={tiny_hf[llm]}", f"model.vae_path={tiny_hf['vae']}",
                                "data.source=shards", "data.shards=unused", *overrides])
