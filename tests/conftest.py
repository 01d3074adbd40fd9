import pytest

from study.config import RunConfig, load_config


@pytest.fixture
def tiny() -> RunConfig:
    return load_config("tiny")


def tiny_config(*overrides: str) -> RunConfig:
    return load_config("tiny", list(overrides))


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> dict[str, str]:
    """Tiny random transformers/diffusers checkpoints, written once per session by `unihetero hf tiny`."""
    from unihetero.cli import main

    out = tmp_path_factory.mktemp("tiny_hf")
    assert main(["hf", "tiny", str(out)]) == 0
    return {name: str(out / name) for name in ("dinov2", "siglip", "qwen2", "llama", "vae")}
