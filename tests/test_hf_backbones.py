import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from study.config import load_config
from study.data.shards import Captions
from study.errors import UserError
from study.inputs import check_inputs
from study.loop import build_optimizer
from study.model import hf
from study.model.flops import forward_flops
from study.model.unified import UnifiedModel
from study.objectives import compute_losses
from tests.conftest import hf_config


@pytest.mark.parametrize("name, image_size, hidden_tokens", [("dinov2", 28, 17), ("siglip", 32, 16)])
def test_vision_encoders_load_and_give_patch_tokens_of_the_chosen_layer(tiny_hf, name, image_size, hidden_tokens):
    enc = hf.VisionEncoder(tiny_hf[name], -1)
    assert enc.image_size == image_size and enc.num_tokens == 16 and enc.width == 32
    images = torch.rand(2, 3, image_size, image_size)
    out = enc(images)
    assert out.shape == (2, 16, 32)
    raw = enc.model(pixel_values=(images - enc.mean) / enc.std, output_hidden_states=True).hidden_states
    assert raw[-1].shape[1] == hidden_tokens  # DINOv2's CLS token is dropped, SigLIP has none
    assert torch.equal(out, raw[-1][:, hidden_tokens - 16:])
    assert not torch.allclose(hf.VisionEncoder(tiny_hf[name], -2)(images), out)
    with pytest.raises(UserError, match="model.vision_layer"):
        hf.VisionEncoder(tiny_hf[name], 5)


@pytest.mark.parametrize("llm", ["qwen2", "llama"])
def test_causal_lms_and_tokenizers_load_and_shapes_match(tiny_hf, llm):
    cfg = hf_config(tiny_hf, "objective.target=semantic_encoder+pixel", llm=llm)
    model = UnifiedModel(cfg)
    assert model.projector[0].in_features == 32 and model.projector[-1].out_features == 48  # vision -> LLM width
    captions = Captions(cfg)
    ids = captions("there are two objects . small red circle")
    assert ids[0] == model.bos_id and ids[-1] == captions.codec.end and len(ids) > 4
    assert len(captions(" ".join(["red"] * 200))) == cfg.data.max_caption_tokens
    tokens = torch.tensor([ids, ids])
    enc, embeds = model.encode(torch.rand(2, 3, 28, 28))
    assert enc.shape == (2, 16, 32) and embeds.shape == (2, 16, 48)
    hidden, layers = model(embeds, tokens, keep_layers=True)
    assert hidden.shape == (2, 16 + len(ids), 48) and len(layers) == 2
    assert model.text_logits(hidden, 16).shape == (2, len(ids), 320)
    assert model.pixel_targets(torch.rand(2, 3, 28, 28)).shape == (2, 16, 4)  # VAE latents, one per token


def test_vae_latent_patches_and_frozen_vae(tiny_hf):
    target = hf.LatentTarget(tiny_hf["vae"], grid=4, patch=2)
    assert target.size == 16 and target.dim == 16  # 4 tokens x 2 latents x 2x downsampling; 4 channels x 2 x 2
    assert target(torch.rand(3, 3, 28, 28)).shape == (3, 16, 16)
    assert not any(p.requires_grad for p in target.parameters())
    target.train()
    assert not target.vae.training


def _grads(module: torch.nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters() if p.requires_grad]


def _backward(cfg, steps: int = 1) -> UnifiedModel:
    """The model after `steps` optimiser steps on one batch, holding the last step's gradients."""
    torch.manual_seed(0)
    model = UnifiedModel(cfg)
    opt = build_optimizer(model, cfg)
    images, tokens = torch.rand(2, 3, 28, 28), torch.tensor([Captions(cfg)("small red circle")] * 2)
    for step in range(steps):
        opt.zero_grad()
        compute_losses(model, cfg, images, tokens, None, torch.Generator().manual_seed(step))["total"].backward()
        opt.step()
    return model


def test_frozen_encoder_gets_no_gradient(tiny_hf):
    model = _backward(hf_config(tiny_hf, "model.freeze_encoder=true", "objective.target=semantic_input"))
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(model.projector))
    trained = _backward(hf_config(tiny_hf, "objective.target=semantic_input"))
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(trained.encoder))


@pytest.mark.parametrize("to_llm", [True, False])
def test_pixel_grad_to_llm_controls_whether_pixel_loss_reaches_the_llm(tiny_hf, to_llm):
    cfg = hf_config(tiny_hf, "objective.target=pixel", "objective.understanding_weight=0",
                    f"objective.pixel_grad_to_llm={str(to_llm).lower()}")
    model = _backward(cfg, steps=3)  # the diffusion head's AdaLN starts at zero: conditioning matters after a step
    reached = any(g is not None and g.abs().sum() > 0 for g in _grads(model.llm))
    assert reached == to_llm
    assert all(g is not None for g in _grads(model.pixel_head))


def test_config_errors_name_the_key(tiny_hf, tmp_path):
    with pytest.raises(UserError, match="model.visual_attention"):
        hf_config(tiny_hf, "model.visual_attention=bidirectional")
    with pytest.raises(UserError, match="model.backbone"):
        load_config("tiny", ["model.backbone=hf", "model.vision_path=x", "model.llm_path=y"])
    with pytest.raises(UserError, match="model.vae_path"):
        load_config("tiny", ["model.backbone=hf", "model.vision_path=x", "model.llm_path=y", "data.source=shards",
                             "data.shards=s", "objective.target=pixel"])
    with pytest.raises(UserError, match=f"model.llm_path': '{tmp_path / 'nope'}'"):
        check_inputs(hf_config(tiny_hf, f"model.llm_path={tmp_path / 'nope'}"))
    with pytest.raises(UserError, match="model.vision_path.*'qwen2'"):
        UnifiedModel(hf_config(tiny_hf, vision="qwen2"))
    for preset in ("full-dinov2-qwen2", "full-siglip-llama"):
        full = load_config(preset)
        assert full.model.backbone == "hf" and full.data.source == "shards" and full.train.samples_seen >= 2 * 10**8


def test_flops_come_from_the_backbones_configs(tiny_hf):
    cfg = hf_config(tiny_hf, "objective.target=semantic_input", llm="llama")  # grouped-query attention
    model = UnifiedModel(cfg)
    images, tokens = torch.rand(1, 3, 28, 28), torch.ones(1, 10, dtype=torch.long)
    with FlopCounterMode(display=False) as enc:
        embeds = model.projector(model.encoder(images))
    with FlopCounterMode(display=False) as llm:
        model(embeds, tokens)
    analytic = forward_flops(cfg, 10)
    attention = 2 * 2 * 2 * 26 ** 2 * 48  # 2 blocks of QK^T and AV over 26 tokens: not counted on CPU SDPA
    lm = model.llm.lm.config
    # the rotary angles (26 positions x head_dim / 2 inverse frequencies): a matmul in transformers 4.56, not in 5.x;
    # too small to count in the analytic FLOPs
    rotary = 2 * 26 * (lm.hidden_size // lm.num_attention_heads) // 2
    assert llm.get_total_flops() - (analytic["llm"] - attention) in (0, rotary)
    measured_encoder = enc.get_total_flops() - 2 * 16 * (32 * 48 + 48 * 48)  # less the projector
    assert abs(analytic["encoder"] - measured_encoder) < 0.1 * measured_encoder  # 16 tokens vs 17 (CLS)
