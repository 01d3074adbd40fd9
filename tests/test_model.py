import torch

from study.data.tokenizer import BOS_ID
from study.model.layers import reference_attention
from study.model.unified import UnifiedModel
from tests.conftest import tiny_config


def _model(*overrides):
    torch.manual_seed(0)
    cfg = tiny_config(*overrides)
    return UnifiedModel(cfg).eval(), cfg


def _run(model, embeds, tokens):
    with torch.no_grad():
        return model(embeds, tokens)[0]


def _baseline(visual_attention, batch):
    model, _ = _model(f"model.visual_attention={visual_attention}")
    embeds = torch.randn(batch, model.num_visual, model.llm.norm.weight.shape[0])
    tokens = torch.randint(3, 20, (batch, 6))
    return model, model.num_visual, embeds, tokens, _run(model, embeds, tokens)


def test_causal_attention_later_tokens_do_not_change_earlier_outputs():
    model, v, embeds, tokens, base = _baseline("causal", 2)
    changed_vis = embeds.clone()
    changed_vis[:, 5] += 1.0
    out = _run(model, changed_vis, tokens)
    assert torch.allclose(out[:, :5], base[:, :5], atol=1e-6)
    assert not torch.allclose(out[:, 5:], base[:, 5:], atol=1e-4)
    changed_text = tokens.clone()
    changed_text[:, 3] = 25
    out = _run(model, embeds, changed_text)
    assert torch.allclose(out[:, : v + 3], base[:, : v + 3], atol=1e-6)
    assert not torch.allclose(out[:, v + 3:], base[:, v + 3:], atol=1e-4)


def test_bidirectional_image_attention_keeps_text_causal():
    model, v, embeds, tokens, base = _baseline("bidirectional", 1)
    changed_vis = embeds.clone()
    changed_vis[:, v - 1] += 1.0
    out = _run(model, changed_vis, tokens)
    assert not torch.allclose(out[:, 0], base[:, 0], atol=1e-4)  # earlier visual token sees a later one
    changed_text = tokens.clone()
    changed_text[:, 2] = 25
    out = _run(model, embeds, changed_text)
    assert torch.allclose(out[:, : v + 2], base[:, : v + 2], atol=1e-6)


def test_sdpa_matches_reference_attention_with_masks():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    mask = torch.rand(10, 10) > 0.3
    mask |= torch.eye(10, dtype=torch.bool)
    expected = reference_attention(q, k, v, mask)
    got = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(expected, got, atol=1e-5)
    for visual_attention in ("causal", "bidirectional"):
        a, _ = _model(f"model.visual_attention={visual_attention}", "model.attention=sdpa")
        b, _ = _model(f"model.visual_attention={visual_attention}", "model.attention=reference")
        b.load_state_dict(a.state_dict())
        images = torch.rand(2, 3, 16, 16)
        tokens = torch.full((2, 3), BOS_ID)
        with torch.no_grad():
            assert torch.allclose(a(a.encode(images)[1], tokens)[0], b(b.encode(images)[1], tokens)[0], atol=1e-5)


def test_diffusion_head_samples_what_it_learned():
    """DDIM samples of a trained head land near deterministic targets (a sampler that only reproduces noise,
    or a head too narrow to pass its input through, fails this)."""
    from study.model.diffloss import DiffusionHead

    torch.manual_seed(0)
    cond = torch.randn(128, 8)
    target = torch.tanh(cond @ torch.randn(8, 12))  # one target per condition, in [-1, 1]
    head = DiffusionHead(12, 8, width=64, depth=2, timesteps=100, clip=1.0)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        loss = head.loss(target, cond, 2, head.draw(2 * len(target), gen, target.device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    sampled = head.sample(cond, 16, torch.Generator().manual_seed(1))
    mean_predictor = (target - target.mean(0)).pow(2).mean()
    assert (sampled - target).pow(2).mean() < 0.2 * mean_predictor


def test_a_diffusion_head_narrower_than_its_pixel_target_is_a_config_error():
    import pytest

    from study.config import load_config
    from study.errors import UserError

    with pytest.raises(UserError, match="objective.diffusion_width"):
        load_config("cpu-small", ["objective.target=pixel"])  # 8x8x3 = 192 values per token, width 128
    assert load_config("cpu-small", ["objective.target=pixel", "objective.diffusion_width=256"])
