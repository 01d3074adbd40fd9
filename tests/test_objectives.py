import pytest
import torch

from study.data.loader import TrainStream
from study.data.worlds import build_world
from study.draws import diffusion_draws, step_generator
from study.loop import build_optimizer
from study.masking import sample_mask
from study.model.diffloss import DiffusionHead
from study.model.unified import UnifiedModel
from study.objectives import compute_losses, loss_terms, regression_loss
from tests.conftest import tiny_config

TARGETS = ["none", "semantic_input", "semantic_encoder", "pixel", "semantic_input+pixel"]


def _losses_over_training(cfg, steps):
    torch.manual_seed(0)
    model = UnifiedModel(cfg)
    opt = build_optimizer(model, cfg)
    stream = TrainStream(cfg, build_world(cfg.data), 0, prefetch=False)
    history = []
    for step, batch in zip(range(steps), stream, strict=False):
        gen = step_generator(0, step)
        mask = sample_mask(cfg.masking, batch.images.shape[0], model.num_visual, gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16"):
            losses = compute_losses(model, cfg, batch.images, batch.tokens, mask, gen)
        losses["total"].backward()
        opt.step()
        opt.zero_grad()
        history.append({k: v.item() for k, v in losses.items()})
    return history


def _mean(history, key, sl):
    return sum(h[key] for h in history[sl]) / len(history[sl])


VARIANTS = [(t, ()) for t in TARGETS] + [
    ("pixel", ("objective.pixel_head=mse", "masking.distribution=truncnorm", "masking.loss_on=masked")),
    ("semantic_encoder", ("objective.semantic_loss=mse", "masking.distribution=uniform", "masking.low=0.1",
                          "masking.high=0.5", "masking.per=sample")),
    ("semantic_input+pixel", ("train.precision=bf16",)),
    ("semantic_input", ("objective.semantic_loss=smooth_l1", "objective.target_ema=0.9",
                        "model.visual_attention=bidirectional", "masking.distribution=fixed", "masking.p=0.5",
                        "masking.loss_on=masked")),
]


@pytest.mark.parametrize(("target", "extra"), VARIANTS)
def test_each_objective_loss_falls(target, extra):
    cfg = tiny_config(f"objective.target={target}", "train.lr=0.003", *extra)
    history = _losses_over_training(cfg, 30)
    for key in history[0]:
        first, last = _mean(history, key, slice(0, 5)), _mean(history, key, slice(-5, None))
        assert last < 0.85 * first, (key, first, last)


@pytest.mark.parametrize("grad_to_llm", [True, False])
def test_pixel_gradient_reaches_llm_only_when_asked(grad_to_llm):
    cfg = tiny_config("objective.target=pixel", f"objective.pixel_grad_to_llm={grad_to_llm}",
                      "objective.understanding_weight=0")
    torch.manual_seed(0)
    model = UnifiedModel(cfg)
    opt = build_optimizer(model, cfg)
    batch = next(iter(TrainStream(cfg, build_world(cfg.data), 0, prefetch=False)))
    for step in range(3):  # the diffusion head's AdaLN starts at zero, so conditioning matters after a step
        opt.zero_grad()
        losses = compute_losses(model, cfg, batch.images, batch.tokens, None, torch.Generator().manual_seed(step))
        losses["pixel"].backward()
        opt.step()
    for module in (model.llm.blocks, model.projector, model.encoder):
        grads = [p.grad for p in module.parameters()]
        touched = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert touched == grad_to_llm
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.pixel_head.output.parameters())


@pytest.mark.parametrize("target", ["semantic_input", "semantic_encoder"])
def test_semantic_targets_carry_no_gradient(target):
    model = UnifiedModel(tiny_config(f"objective.target={target}"))
    enc, embeds = model.encode(torch.rand(2, 3, 16, 16))
    assert embeds.requires_grad and not model.semantic_targets(enc, embeds).requires_grad


def test_ema_projector_tracks_live_projector():
    cfg = tiny_config("objective.target=semantic_input", "objective.target_ema=0.5")
    model = UnifiedModel(cfg)
    with torch.no_grad():
        for p in model.projector.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.ema_projector.parameters()]
    model.update_ema(0.5)
    for b, e, live in zip(before, model.ema_projector.parameters(), model.projector.parameters(), strict=True):
        assert torch.allclose(e, 0.5 * b + 0.5 * live)


def test_batch_with_nothing_masked_has_zero_generation_loss_not_nan():
    cfg = tiny_config("objective.target=semantic_input+pixel", "masking.loss_on=masked")
    model = UnifiedModel(cfg)
    batch = next(iter(TrainStream(cfg, build_world(cfg.data), 0, prefetch=False)))
    empty = torch.zeros(batch.images.shape[0], model.num_visual, dtype=torch.bool)
    losses = compute_losses(model, cfg, batch.images, batch.tokens, empty, None)
    assert losses["semantic"].item() == 0 and losses["pixel"].item() == 0
    assert torch.isfinite(losses["total"])


def test_masked_generation_losses_average_the_masked_positions_only():
    cfg = tiny_config("objective.target=semantic_input+pixel", "objective.pixel_head=mse", "masking.loss_on=masked",
                      "masking.distribution=uniform", "masking.low=0.2", "masking.high=0.6", "masking.per=sample")
    model = UnifiedModel(cfg)
    batch = next(iter(TrainStream(cfg, build_world(cfg.data), 0, prefetch=False)))
    mask = sample_mask(cfg.masking, batch.images.shape[0], model.num_visual, torch.Generator().manual_seed(3))
    losses = compute_losses(model, cfg, batch.images, batch.tokens, mask, None)
    enc, embeds = model.encode(batch.images)  # by hand: the masked positions picked out by boolean indexing
    hidden = model(model.mask_inputs(embeds, mask), batch.tokens)[0][:, : model.num_visual - 1]
    where = mask[:, 1:]
    assert where.any() and not where.all()
    semantic = regression_loss(model.semantic_head(hidden[where]), model.semantic_targets(enc, embeds)[:, 1:][where],
                               cfg.objective.semantic_loss).mean()
    pixel = regression_loss(model.pixel_head(hidden[where]), model.pixel_targets(batch.images)[:, 1:][where], "mse")
    torch.testing.assert_close(losses["semantic"], semantic)
    torch.testing.assert_close(losses["pixel"], pixel.mean())


def test_weighted_diffusion_loss_is_the_loss_of_the_weighted_rows():
    torch.manual_seed(0)
    head = DiffusionHead(12, 8, width=32, depth=1, timesteps=100)
    target, cond = torch.randn(10, 12), torch.randn(10, 8)
    t, noise = head.draw(20, torch.Generator().manual_seed(1), target.device)
    keep = torch.tensor([1, 0, 0, 1, 1, 0, 1, 0, 0, 1], dtype=torch.bool)
    copies = torch.cat([keep, keep])  # row i's noised copies are rows i and 10 + i
    weighted = head.loss(target, cond, 2, (t, noise), keep.float())
    torch.testing.assert_close(weighted, head.loss(target[keep], cond[keep], 2, (t[copies], noise[copies])))
    unweighted = head.loss(target, cond, 2, (t, noise))
    torch.testing.assert_close(head.loss(target, cond, 2, (t, noise), torch.ones(10)), unweighted)


@pytest.mark.parametrize("loss_on", ["next", "masked"])
def test_the_losses_trace_as_one_graph(loss_on):
    """No boolean indexing and no generator inside: a masked batch's losses compile without a graph break."""
    cfg = tiny_config("objective.target=semantic_input+pixel", "masking.distribution=truncnorm",
                      f"masking.loss_on={loss_on}", "masking.caption_on=clean")
    model = UnifiedModel(cfg)
    batch = next(iter(TrainStream(cfg, build_world(cfg.data), 0, prefetch=False)))
    gen = torch.Generator().manual_seed(0)
    mask = sample_mask(cfg.masking, batch.images.shape[0], model.num_visual, gen)
    draws = diffusion_draws(model, cfg, batch.images.shape[0], gen, batch.images.device)
    explained = torch._dynamo.explain(loss_terms)(model, cfg, batch.images, batch.tokens, mask, draws)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_frozen_encoder_loads_from_a_run_checkpoint_and_stays_fixed(tmp_path):
    from study.inputs import prepare
    from study.rebuild import build_model
    from study.train import train

    source = train(tiny_config("train.samples_seen=32", "eval.inference_scaling=false"), tmp_path / "src", quiet=True)
    checkpoint = sorted((source / "checkpoints").glob("*.pt"))[-1]
    trained = {k.removeprefix("encoder."): v for k, v in torch.load(checkpoint, weights_only=True)["model"].items()
               if k.startswith("encoder.")}
    cfg = tiny_config(f"model.encoder_checkpoint={checkpoint}", "model.freeze_encoder=true")
    model = build_model(prepare(cfg, tmp_path))
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in trained.items())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    opt = build_optimizer(model, cfg)
    batch = next(iter(TrainStream(cfg, build_world(cfg.data), 0, prefetch=False)))
    compute_losses(model, cfg, batch.images, batch.tokens, None, None)["total"].backward()
    opt.step()
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in trained.items())
