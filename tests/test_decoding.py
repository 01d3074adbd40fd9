"""KV-cached decoding: feeding a sequence one position at a time through the cache gives the hidden states of one
full forward, for the miniature LLM (causal or bidirectional visual attention) and the transformers LLMs; greedy
decoding is the argmax continuation recomputed from scratch at every step."""

from __future__ import annotations

import pytest
import torch

from study.evaluation.decoding import greedy_decode
from study.model.layers import KVCache
from study.model.unified import UnifiedModel
from tests.conftest import tiny_config


def _hf(tiny_hf, llm: str) -> list[str]:
    return ["model.backbone=hf", f"model.vision_path={tiny_hf['dinov2']}", f"model.llm_path={tiny_hf[llm]}",
            "data.source=shards", "data.shards=unused"]


def _model(overrides: list[str]) -> UnifiedModel:
    torch.manual_seed(0)
    model = UnifiedModel(tiny_config(*overrides)).eval()
    head = model.llm.lm_head  # untied from the input embedding, so greedy decoding does not repeat its input
    head.weight = torch.nn.Parameter(torch.randn_like(head.weight))
    return model


def _cases(tiny_hf) -> dict[str, list[str]]:
    return {"mini_causal": [], "mini_bidirectional": ["model.visual_attention=bidirectional"],
            "qwen2": _hf(tiny_hf, "qwen2"), "llama": _hf(tiny_hf, "llama")}


@pytest.mark.parametrize("case", ["mini_causal", "mini_bidirectional", "qwen2", "llama"])
@torch.no_grad()
def test_cached_steps_match_one_full_forward(tiny_hf, case):
    model = _model(_cases(tiny_hf)[case])
    size = model.encoder.image_size if hasattr(model.encoder, "image_size") else 16
    _, embeds = model.encode(torch.rand(3, 3, size, size))
    tokens = torch.randint(3, 20, (3, 7))
    full, _ = model(embeds, tokens)
    cache = KVCache()
    steps = [model(embeds, tokens[:, :1], cache=cache)[0]]
    steps += [model(embeds[:, :0], tokens[:, i:i + 1], cache=cache)[0] for i in range(1, tokens.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
    assert cache.length == embeds.shape[1] + tokens.shape[1]


@pytest.mark.parametrize("case", ["mini_causal", "qwen2"])
@torch.no_grad()
def test_greedy_decoding_is_the_recomputed_argmax(tiny_hf, case):
    model = _model(_cases(tiny_hf)[case])
    size = model.encoder.image_size if hasattr(model.encoder, "image_size") else 16
    _, embeds = model.encode(torch.rand(4, 3, size, size))
    end, steps = -1, 6  # an id never produced: every row runs the full length
    got = greedy_decode(model, embeds, steps, end)
    tokens = torch.full((4, 1), model.bos_id)
    for _ in range(steps):
        hidden, _ = model(embeds, tokens)
        tokens = torch.cat([tokens, model.llm.lm_head(hidden[:, -1]).argmax(-1)[:, None]], dim=1)
    assert got == tokens[:, 1:].tolist()
    assert len({tuple(row) for row in got}) > 1 or len(set(got[0])) > 1  # not one repeated token


@pytest.mark.parametrize("case, target", [("mini_causal", "semantic_input"), ("mini_causal", "semantic_encoder"),
                                          ("qwen2", "semantic_input"), ("mini_bidirectional", "semantic_input")])
def test_cached_rollout_equals_the_recomputed_one(tiny_hf, case, target):
    """The KV-cached free-running rollout gives the errors of recomputing the prefix at every step (bidirectional
    visual attention, which a cache cannot serve, recomputes either way)."""
    from study.evaluation.generation import rollout, rollout_errors, rollout_positions

    overrides = [*_cases(tiny_hf)[case], f"objective.target={target}", "eval.rollout_steps=4"]
    torch.manual_seed(0)
    model = UnifiedModel(tiny_config(*overrides)).eval()
    images = torch.rand(6, 3, *(2 * [model.encoder.image_size if case == "qwen2" else 16]))
    with torch.no_grad():
        enc, embeds = model.encode(images)
        targets = model.semantic_targets(enc, embeds)
        errors = {}
        for cached in ("true", "false"):
            cfg = tiny_config(*overrides, f"eval.rollout_cache={cached}")
            errors[cached] = rollout_errors(targets, rollout(model, cfg, embeds), rollout_positions(model, cfg))
    kinds = ("", "_copy_last", "_mean_target")
    assert set(errors["true"]) == {f"rollout_err{kind}/{k}" for kind in kinds for k in range(1, 5)}
    assert errors["true"] == pytest.approx(errors["false"], abs=1e-5)
    assert errors["true"]["rollout_err/4"] > 0
