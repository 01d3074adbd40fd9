import pytest

from study.config import RunConfig, load_config


@pytest.fixture
def tiny() -> RunConfig:
    return load_config("tiny")


def tiny_config(*overrides: str) -> RunConfig:
    return load_config("tiny", list(overrides))
