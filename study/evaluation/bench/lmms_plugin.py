"""The lmms-eval model `unihetero`, as lmms-eval loads outside models: a class at module level, announced by the
`lmms_eval.models` entry point (pyproject.toml), whose payload, `manifest`, gives a `ModelManifest` (lmms-eval >= 0.6,
`lmms_eval/models/registry_v2.py`; a callable, so that lmms-eval's registry, which loads the entry point while
`lmms_eval.models` initialises, never waits on this module). Importing this module needs lmms-eval.

    from lmms_eval.models import get_model
    lmm = get_model("unihetero")(run_dir="runs/abc123")     # or model_args "run_dir=...,step=...,batch_size=..."
    lmms_eval.evaluator.simple_evaluate(model=lmm, tasks=[...])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lmms_eval.api.model import lmms

from study.evaluation.bench.lmms import BATCH_SIZE, Request, RunLMM

if TYPE_CHECKING:
    from lmms_eval.models.registry_v2 import ModelManifest


class UniheteroLMMS(RunLMM, lmms):
    """A trained run's checkpoint answering lmms-eval's simple-model requests (study/evaluation/bench/lmms.py)."""

    is_simple = True

    def __init__(self, run_dir: str, step: int | str | None = None, device: str | None = None,
                 batch_size: int | str = BATCH_SIZE, **_: object):
        lmms.__init__(self)
        RunLMM.__init__(self, run_dir, step, device, batch_size)

    def generate_until_multi_round(self, requests: Sequence[Request]) -> list[str]:
        raise NotImplementedError("unihetero models answer single-round requests only")


def manifest() -> ModelManifest:
    """The entry point's payload: `unihetero`, a simple model, this module's class."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="unihetero", simple_class_path=f"{__name__}.{UniheteroLMMS.__name__}")
