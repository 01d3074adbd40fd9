"""The paper's-regime objective keys: semantic gradient to the inputs on or off, normalised targets, caption loss
on the clean sequence, a frozen target projector, paired initialisation, warmup that fits the run, and the
second passes counted in the FLOPs."""

import pytest
import torch

from study.config import load_config
from study.data.worlds import build_world
from study.draws import step_generator
from study.errors import UserError
from study.inputs import prepare
from study.loop import lr_factor
from study.masking import sample_mask
from study.model.flops import forward_flops, train_flops_per_sample
from study.model.unified import UnifiedModel
from study.objectives import caption_loss, compute_losses
from study.rebuild import build_model
from tests.conftest import tiny_config


def batch_of(cfg, n=8):
    from study.data.loader import TrainStream

    stream = TrainStream(cfg, build_world(cfg.data), 0, prefetch=False)
    batch = next(iter(stream))
    stream.close()
    return batch.images[:n], batch.tokens[:n]


def semantic_grads(*overrides):
    """Gradients of the semantic loss alone on projector, encoder, mask embedding and LLM."""
    cfg = tiny_config("objective.target=semantic_input", *overrides)
    torch.manual_seed(0)
    model = UnifiedModel(cfg)
    images, tokens = batch_of(cfg)
    mask = sample_mask(cfg.masking, len(images), model.num_visual, step_generator(0, 0))
    compute_losses(model, cfg, images, tokens, mask, None)["semantic"].backward()
    norm = {name: sum(float(p.grad.abs().sum()) for p in mod.parameters() if p.grad is not None)
            for name, mod in (("projector", model.projector), ("encoder", model.encoder), ("llm", model.llm),
                              ("head", model.semantic_head))}
    norm["mask_embedding"] = 0.0 if model.mask_embedding.grad is None else float(model.mask_embedding.grad.abs().sum())
    return norm


def test_semantic_loss_reaches_the_inputs_only_when_asked():
    masked = ("masking.distribution=fixed", "masking.p=0.5")
    on = semantic_grads(*masked)
    assert on["projector"] > 0 and on["encoder"] > 0 and on["mask_embedding"] > 0
    off = semantic_grads("objective.semantic_grad_to_inputs=false", *masked)
    assert off["projector"] == 0.0 and off["encoder"] == 0.0 and off["mask_embedding"] == 0.0
    assert off["llm"] > 0 and off["head"] > 0  # the LLM and the head still learn from it


def test_target_norm_gives_zero_mean_unit_variance_per_token():
    cfg = tiny_config("objective.target=semantic_encoder", "objective.target_norm=true")
    model = UnifiedModel(cfg)
    enc, embeds = model.encode(batch_of(cfg)[0])
    target = model.semantic_targets(enc, embeds)
    assert target.mean(-1).abs().max() < 1e-5
    assert (target.var(-1, unbiased=False) - 1).abs().max() < 1e-3
    plain = UnifiedModel(tiny_config("objective.target=semantic_encoder")).semantic_targets(enc, embeds)
    assert (plain.var(-1, unbiased=False) - 1).abs().max() > 0.1  # the raw targets are not so


def test_clean_caption_loss_reads_the_unmasked_inputs():
    common = ("objective.target=semantic_input", "masking.distribution=fixed", "masking.p=0.75")
    images, tokens = batch_of(tiny_config(*common))
    results = {}
    for caption_on in ("masked", "clean"):
        cfg = tiny_config(*common, f"masking.caption_on={caption_on}")
        torch.manual_seed(0)
        model = UnifiedModel(cfg)
        mask = sample_mask(cfg.masking, len(images), model.num_visual, step_generator(0, 0))
        assert mask.any()
        with torch.no_grad():
            losses = compute_losses(model, cfg, images, tokens, mask, None)
            _, embeds = model.encode(images)
            clean = caption_loss(model.text_logits(model(embeds, tokens)[0], model.num_visual), tokens)
            masked = caption_loss(model.text_logits(model(model.mask_inputs(embeds, mask), tokens)[0],
                                                    model.num_visual), tokens)
        results[caption_on] = (losses, clean, masked)
    losses, clean, masked = results["clean"]
    assert torch.equal(losses["caption"], clean) and not torch.equal(clean, masked)
    assert torch.equal(results["masked"][0]["caption"], results["masked"][2])
    assert torch.equal(losses["semantic"], results["masked"][0]["semantic"])  # generation still reads the mask


def test_arms_at_one_seed_share_their_initial_weights_with_paired_init():
    arms = ["none", "semantic_input", "semantic_encoder", "pixel", "semantic_input+pixel"]
    states = {}
    for arm in arms:
        torch.manual_seed(3)
        states[arm] = UnifiedModel(tiny_config(f"objective.target={arm}", "model.paired_init=true")).state_dict()
    shared = [k for k in states["none"] if k.split(".")[0] in ("encoder", "projector", "llm", "mask_embedding")]
    assert len(shared) > 10
    for arm in arms[1:]:
        assert all(torch.equal(states["none"][k], states[arm][k]) for k in shared), arm
    torch.manual_seed(3)
    v1 = UnifiedModel(tiny_config("objective.target=semantic_input")).state_dict()
    assert not all(torch.equal(states["none"][k], v1[k]) for k in shared)  # v1's order shifts the draws
    torch.manual_seed(3)
    v1_text = UnifiedModel(tiny_config()).state_dict()
    assert all(torch.equal(states["none"][k], v1_text[k]) for k in states["none"])  # text only is unchanged


def test_frozen_target_projector_comes_from_a_checkpoint(tmp_path):
    torch.manual_seed(1)
    donor = UnifiedModel(tiny_config())
    path = tmp_path / "donor.pt"
    torch.save({"model": donor.state_dict()}, path)
    cfg = tiny_config("objective.target=semantic_input", f"objective.target_projector={path}")
    model = build_model(prepare(cfg, tmp_path))
    for a, b in zip(model.ema_projector.parameters(), donor.projector.parameters(), strict=True):
        assert torch.equal(a, b) and not a.requires_grad
    before = [p.clone() for p in model.ema_projector.parameters()]
    model.update_ema(cfg.objective.target_ema)
    assert all(torch.equal(a, b) for a, b in zip(before, model.ema_projector.parameters(), strict=True))


def test_second_passes_are_counted_in_the_flops():
    base = tiny_config("objective.target=semantic_input", "masking.distribution=fixed")
    both = tiny_config("objective.target=semantic_input", "masking.distribution=fixed", "masking.caption_on=clean",
                       "objective.semantic_grad_to_inputs=false")
    extra = forward_flops(both, 10)
    assert "llm_masked_pass" not in forward_flops(base, 10)
    assert extra["llm_masked_pass"] == extra["llm_semantic_pass"] > 0
    assert train_flops_per_sample(both, 10) == pytest.approx(
        train_flops_per_sample(base, 10) + 3 * (extra["llm_masked_pass"] + extra["llm_semantic_pass"]))


def test_warmup_fraction_and_a_run_shorter_than_its_warmup():
    cfg = tiny_config("train.warmup_fraction=0.1")
    assert cfg.warmup == round(0.1 * cfg.steps) and lr_factor(0, cfg) == pytest.approx(1 / cfg.warmup)
    with pytest.raises(UserError, match=r"train.warmup_steps.*run's 4 steps .* fewer than its 5 warmup steps"):
        load_config("tiny", ["data.world_version=2", "train.samples_seen=64"])
    assert load_config("tiny", ["train.samples_seen=64"]).steps == 4  # v1 keeps its schedules valid

