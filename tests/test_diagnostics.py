"""Collapse diagnostics: a deliberately collapsed model is flagged (per image, and globally), a healthy one
passes; the rollout error has its copy-last-token baseline."""

import torch

from study.data.batch import make_batch
from study.data.loader import held_out_indices
from study.data.worlds import build_world
from study.evaluate import evaluate
from study.evaluation.diagnostics import collapse_diagnostics, is_collapsed
from study.model.unified import UnifiedModel
from tests.conftest import tiny_config


def held_out_embeddings(model, cfg, n=32):
    with torch.no_grad():
        return model.encode(make_batch(build_world(cfg.data), held_out_indices(0, n)).images)[1]


def test_healthy_random_init_passes_and_both_collapses_are_flagged():
    cfg = tiny_config()
    torch.manual_seed(0)
    model = UnifiedModel(cfg)
    healthy = collapse_diagnostics(held_out_embeddings(model, cfg))
    assert not is_collapsed(healthy), healthy
    assert healthy["diag/effective_rank"] > 5

    embeds = held_out_embeddings(model, cfg)
    spread = float((embeds - embeds.mean((0, 1))).std())
    per_image = embeds.mean(1, keepdim=True).expand_as(embeds) + 0.01 * spread * torch.randn_like(embeds)
    flagged = collapse_diagnostics(per_image)
    assert flagged["diag/image_share"] > 0.99 and flagged["diag/neighbour_cos"] > 0.99 and is_collapsed(flagged)

    with torch.no_grad():  # the projector's output no longer depends on the image: one sequence for all
        last = model.projector[-1]
        last.weight.zero_()
        last.bias.normal_()
    everywhere = collapse_diagnostics(held_out_embeddings(model, cfg))
    assert everywhere["diag/global_share"] == 1.0 and is_collapsed(everywhere)
    assert everywhere["diag/effective_rank"] == 1.0


def test_every_evaluation_records_diagnostics_and_the_copy_last_baseline():
    cfg = tiny_config("objective.target=semantic_input", "eval.inference_scaling=false")
    torch.manual_seed(0)
    record = evaluate(UnifiedModel(cfg), cfg, 0, final=False, world=build_world(cfg.data))
    assert {"diag/image_share", "diag/global_share", "diag/neighbour_cos", "diag/effective_rank"} <= set(record)
    steps = cfg.eval.rollout_steps
    assert all(0 <= record[f"rollout_err_copy_last/{k}"] <= 2 for k in range(1, steps + 1))
    assert is_collapsed({"zs_acc": 0.5}) is None


def test_report_marks_collapsed_arms_in_their_label():
    import polars as pl

    from analysis.collapse import mark_collapsed
    from analysis.grids import Grid

    members = pl.DataFrame({"run_id": ["a", "b", "c", "d"], "trial": [0, 1, 2, 3],
                            "arm": ["text_only", "text_only", "semantic", "semantic"]})
    usable = pl.DataFrame({"run_id": ["a", "b", "c", "d"], "diag/image_share": [0.1, 0.12, 0.95, 0.3],
                           "diag/global_share": [0.2, 0.2, 0.01, 0.2]})
    marked, notes = mark_collapsed(Grid("g", "cpu", "", members), usable)
    assert marked.members["arm"].to_list() == ["text_only", "text_only", "semantic [collapsed 1/2]",
                                               "semantic [collapsed 1/2]"]
    assert "image_share >= 0.7" in notes[0]
    untouched, none = mark_collapsed(Grid("g", "cpu", "", members), usable.drop("diag/image_share"))
    assert untouched.members["arm"].to_list() == members["arm"].to_list() and none == []
