"""`sweep plan --cost`: the analytic FLOPs of a training step against torch's own FLOP counter (forward and backward
of the real step; attention as plain matmuls so the counter sees it), the per-trial and total costs in the table and
as JSON, the MFU's source, and a trial that does not fit its device named with the keys to change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from study.config import load_config
from study.draws import step_draws
from study.model.flops import forward_flops, model_dims, train_flops_per_sample
from study.model.memory import caption_length
from study.model.unified import UnifiedModel
from study.objectives import loss_terms
from sweeps import cost
from tests.conftest import hf_config
from unihetero.cli import main


def _counted_step_flops(cfg, caption_tokens: int | None = None) -> tuple[float, float]:
    """(FLOPs torch counts in one training step's forward and backward, the analytic count for its rows)."""
    torch.manual_seed(0)
    model = UnifiedModel(cfg)
    rows, size = 4, getattr(model.encoder, "image_size", cfg.data.image_size)  # a pretrained encoder's own size
    images = torch.rand(rows, 3, size, size)
    tokens = torch.randint(1, 20, (rows, caption_tokens or caption_length(cfg)))
    draws = step_draws(model, cfg, 0, torch.device("cpu")).slice(0, rows)
    with FlopCounterMode(display=False) as counter:
        loss_terms(model, cfg, images, tokens, draws.mask, draws.diffusion)["total"].backward()
    return counter.get_total_flops(), rows * train_flops_per_sample(cfg, tokens.shape[1])


@pytest.mark.parametrize("overrides", [[], ["objective.target=semantic_input"], ["objective.target=semantic_encoder"],
                                       ["objective.target=pixel", "objective.pixel_head=mse"]])
def test_the_analytic_step_flops_are_within_2_percent_of_the_flop_counter(overrides):
    cfg = load_config("tiny", ["model.attention=reference", *overrides])
    counted, analytic = _counted_step_flops(cfg)
    assert abs(analytic - counted) < 0.02 * counted, (analytic, counted)


@pytest.mark.parametrize("target", [["objective.target=semantic_input"],
                                    ["objective.target=pixel", "objective.pixel_head=mse"]])
def test_the_tiny_hf_step_flops_are_within_2_percent_of_the_flop_counter(tiny_hf, target):
    """The pixel arm counts the frozen VAE's encoder forward (its convolutions, its mid-block attention)."""
    cfg = hf_config(tiny_hf, "model.attention=reference", *target)
    counted, analytic = _counted_step_flops(cfg, caption_tokens=12)  # the tiny LLM has 19 text positions
    # the vision encoder and the VAE attend through CPU SDPA, which the counter does not count (`model.attention` is
    # the LLM's): their attention terms (QK^T and AV; the encoder's forward and backward, 4 rows) leave the analytic
    # side
    d = model_dims(cfg)
    analytic -= 3 * 4 * d.enc_depth * 2 * 2 * d.tokens ** 2 * d.enc_width
    flops = forward_flops(cfg, 12)
    assert ("vae" in flops) == ("objective.target=pixel" in target)  # 5.7% of the pixel step: missing it fails here
    if "vae" in flops:
        widths = json.loads((Path(cfg.model.vae_path) / "config.json").read_text())["block_out_channels"]
        latent_positions = d.tokens * cfg.model.vae_latent_patch ** 2
        analytic -= 4 * 2 * 2 * latent_positions ** 2 * widths[-1]
    assert abs(analytic - counted) < 0.02 * counted, (analytic, counted)


def test_plan_cost_as_a_table_and_as_json(capsys):
    assert main(["sweep", "plan", "v2_demo", "--preset", "demo", "--cost", "--gpu-type", "h100", "--mfu", "0.4"]) == 0
    table = capsys.readouterr().out
    assert "MFU 0.4 [given]" in table and "peak GiB/rank" in table and "device-hours" in table
    assert main(["sweep", "plan", "v2_demo", "--preset", "demo", "--json", "--gpu-type", "h100"]) == 0
    plan = json.loads(capsys.readouterr().out)
    trials = plan["trials"]
    assert plan["total"]["train_flops"] == pytest.approx(sum(t["train_flops"] for t in trials))
    assert plan["total"]["device_hours"] == pytest.approx(
        sum(t["train_flops"] + t["eval_flops"] for t in trials) / (989e12 * plan["mfu"]) / 3600)
    assert plan["mfu_source"].startswith(("measured", "assumed"))
    vlm = [t for t in trials if t["memory_gib"]]
    assert vlm and all(t["fits"] and t["memory_gib"]["peak"] > 0 for t in vlm)
    assert all(t["tokens"] > t["samples"] > 0 for t in trials)


def test_a_trial_that_does_not_fit_names_the_keys_to_change(capsys, monkeypatch):
    small = cost.Device("a 1 MiB device", 1e12, 2**20, "SMALL")
    monkeypatch.setitem(cost.GPUS, "h100", small)
    assert main(["sweep", "plan", "v2_demo", "--preset", "demo", "--cost"]) == 0
    out = capsys.readouterr().out
    assert "NO" in out and "train.activation_checkpointing=true" in out and "train.grad_accum" in out
    assert "do not fit" in out.splitlines()[-1]


def test_a_bad_mfu_is_one_line(capsys):
    assert main(["sweep", "plan", "v2_demo", "--preset", "demo", "--cost", "--mfu", "1.5"]) == 2
    assert "--mfu 1.5: must be in (0, 1]" in capsys.readouterr().err


@pytest.mark.slow
def test_a_full_scale_grid_is_sized_from_the_vendored_backbone_configs(capsys):
    """The full preset's backbone paths are placeholders: the planner reads DINOv2-L's and Qwen2-7B's published
    configs and the KL-16 VAE's (study/configs/backbones/) and traces the step at their shapes."""
    cfg = cost.plannable(load_config("full-dinov2-qwen2"))
    assert 7.9e9 < cost.parameters(cfg) < 8.0e9  # Qwen2-7B's 7.6B + DINOv2-L's 0.3B + the projector
    plans = {}
    for ranks in (8, 64):
        assert main(["sweep", "plan", "generation_target", "--preset", "full", "--json", "--gpu-type", "h100",
                     "--ranks", str(ranks)]) == 0
        plans[ranks] = json.loads(capsys.readouterr().out)
    assert len(plans[8]["trials"]) == 18 and plans[8]["total"]["device_hours"] > 1e4  # 6 arms x 3 seeds
    # at 256 rows per rank the activations do not fit an 80 GB card; at 32 they do
    assert all(not t["fits"] and "train.grad_accum" in t["advice"] for t in plans[8]["trials"])
    assert all(t["fits"] for t in plans[64]["trials"])
    # the pixel arms count the frozen KL-16 VAE's encoder: 200M samples at 1.37e11 FLOPs each, at least
    flops = {t["axes"]["arm"]: t["train_flops"] for t in plans[64]["trials"]}
    assert flops["pixel_detached"] - flops["text_only"] > 2e8 * 1.37e11


def test_a_placeholder_without_a_vendored_config_is_one_line():
    from study.errors import UserError

    with pytest.raises(UserError, match="model.vision_path': '/path/to/siglip.*no config of that name is vendored"):
        cost.plannable(load_config("full-siglip-llama"))


def test_the_vendored_kl16_vae_is_marks_and_its_encoder_flops_are_the_counters():
    """The KL-16 VAE written from MAR's architecture: its encoder has MAR's parameter count, downsamples 16 times to
    16 channels, and its analytic forward FLOPs equal torch's counter (the CPU SDPA attention terms aside)."""
    from diffusers import AutoencoderKL

    from study.model.flops import vae_encoder_flops

    path = cost.BACKBONES / "kl16-vae"
    with torch.device("meta"):
        meta = AutoencoderKL.from_config(AutoencoderKL.load_config(str(path)))
    assert sum(p.numel() for p in meta.encoder.parameters()) == 28_265_760  # MAR's Encoder(ch_mult=(1, 1, 2, 2, 4))
    assert meta.config.latent_channels == 16 and 2 ** (len(meta.config.block_out_channels) - 1) == 16
    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(path))).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        latents = vae.encode(torch.randn(1, 3, 32, 32)).latent_dist.mean
    assert latents.shape == (1, 16, 2, 2)
    attention = 3 * 2 * 2 * (2 * 2) ** 2 * 512  # QK^T and AV of its 3 attentions at the 2x2 level (uncounted SDPA)
    assert vae_encoder_flops(str(path), 32) - attention == counter.get_total_flops()
