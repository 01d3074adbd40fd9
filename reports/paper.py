"""The paper's claims (PAPER.md) as studies: one per grid in `sweeps/grids`, with the claimed direction of
each comparison read from the arm's config, so the rule is the same for any grid that varies it."""

from __future__ import annotations

import polars as pl

from analysis.runs import NORMALISED, PRIMARY
from reports import data_use, extras
from reports.studies import LAST_ROLLOUT, Measure, Study


def _parts(cfg: dict) -> list[str]:
    return str(cfg.get("objective.target", "none")).split("+")


def generation_claim(cfg: dict) -> int:
    """Takeaway 1: semantic generation helps (+1); a pixel loss reaching the LLM hurts (-1); a detached pixel
    decoder alone, or semantics mixed with a pixel gradient into the LLM, is not claimed (0)."""
    parts = _parts(cfg)
    pixel_into_llm = "pixel" in parts and bool(cfg.get("objective.pixel_grad_to_llm"))
    semantic = any(p.startswith("semantic") for p in parts)
    if semantic and not pixel_into_llm:
        return 1
    if pixel_into_llm and not semantic:
        return -1
    return 0


def _input_embedding(cfg: dict) -> bool:
    return _parts(cfg) == ["semantic_input"]


def _gaussian_masking(cfg: dict) -> int:
    return 1 if cfg.get("masking.distribution") in ("gaussian", "truncnorm") else 0


TEXT_ONLY = pl.col("objective.target") == "none"
# the pixel head (its width) is part of a generation arm, so pixel arms pair with text_only
GENERATION = ("objective.target", "objective.pixel_grad_to_llm", "objective.diffusion_width")

V1_STUDIES = (
    Study(
        "generation_target", "Generation target", "Takeaway 1",
        "[paper] Generation improves understanding only if the model generates semantics, not pixels: "
        "autoregressing high-level visual representations inside the LLM helps understanding; pixel-level "
        "objectives whose gradient reaches the LLM hurt it.",
        treatment=GENERATION, baseline=TEXT_ONLY, measures=(Measure(PRIMARY, generation_claim),),
        metrics=(PRIMARY, "caption_loss", "probe_acc/shape", "sem/cos", "pix/psnr"),
        extras=(extras.learning_curves, extras.decoded_images)),
    Study(
        "data_scaling", "Data scaling and utilization", "Takeaway 2",
        "[paper + summary] Generation gives a better data-scaling trend and higher data utilization: the "
        "unified model's understanding starts lower but rises more steeply with data and overtakes the "
        "text-only baseline (Figure 4).",
        treatment=GENERATION, baseline=TEXT_ONLY, measures=(Measure(PRIMARY, generation_claim),),
        by_scale=True, extras=(data_use.data_utilization,)),
    Study(
        "ar_target", "Autoregression target", "Takeaway 3",
        "[paper] Autoregression on the LLM input embedding beats autoregression on the vision-encoder output: "
        "less cumulative error over free-running generation.",
        treatment=("objective.target", "objective.target_ema"),
        baseline=pl.col("objective.target") == "semantic_encoder",
        measures=(Measure(LAST_ROLLOUT, lambda cfg: -1 if _input_embedding(cfg) else 0),
                  Measure(PRIMARY, lambda cfg: 1 if _input_embedding(cfg) else 0)),
        metrics=(PRIMARY, "caption_loss", LAST_ROLLOUT, "sem/cos"), extras=(extras.rollout,)),
    Study(
        "mask_distribution", "Masking distribution", "Gaussian masking",
        "[paper names the technique; the rest is ours] The paper lists Gaussian masking probability sampling "
        "among its techniques; we test whether drawing the masking probability from a Gaussian (or MAR's "
        "truncated normal) beats no masking.",
        treatment=("masking.",), baseline=pl.col("masking.distribution") == "none",
        measures=(Measure(PRIMARY, _gaussian_masking),), extras=(extras.masking_histograms,)),
    Study(
        "masked_generation", "Generation under masking", "Takeaway 1, masked",
        "[follow-up, ours; PROTOCOL.md] Takeaway 1 again with the paper's masking technique: semantic_input "
        "trained under each masking distribution of the mask_distribution grid is claimed to beat text only.",
        treatment=GENERATION + ("masking.",), baseline=TEXT_ONLY, measures=(Measure(PRIMARY, generation_claim),),
        metrics=(PRIMARY, "caption_loss", "probe_acc/shape", "sem/cos")),
    Study(
        "semantic_weight", "Generation under a lighter semantic loss", "Takeaway 1, lighter loss",
        "[follow-up, ours; PROTOCOL.md] Takeaway 1 again with the semantic loss weighted 0.03 to 1.0 against "
        "the caption loss: semantic_input at every weight is claimed to beat text only.",
        treatment=GENERATION + ("objective.semantic_weight",), baseline=TEXT_ONLY,
        measures=(Measure(PRIMARY, generation_claim),),
        metrics=(PRIMARY, "caption_loss", "zs_acc/location", "sem/cos")),
    Study(
        "inference_scaling", "Inference-time scaling", "Inference scaling",
        "[paper names the technique; the rest is ours] Spending more inference compute gives better outputs: "
        "answers averaged over more masked views, more diffusion sampling steps for pixels.",
        metrics=(PRIMARY, "pix/psnr"), extras=(extras.inference_scaling,)),
    Study(
        "loss_weight", "Generation loss weight", "Loss weight (no claim)",
        "[ours, no paper claim] How the weight of the generation loss against the caption loss moves "
        "understanding; arms are compared with weight 1.0 of the same target.",
        treatment=("objective.semantic_weight", "objective.pixel_weight"),
        baseline=(pl.col("objective.semantic_weight") == 1.0) & (pl.col("objective.pixel_weight") == 1.0),
        measures=(Measure(PRIMARY, lambda cfg: 0),)),
)

# Protocol 2 (reports/results/cpu-v2/PROTOCOL.md): the paper's regime. The semantic arms' anti-collapse settings
# differ from text only's defaults, so they are part of the treatment; so is the masking of the masking grid.
V2_TREATMENT = GENERATION + ("objective.target_norm", "objective.semantic_grad_to_inputs", "objective.target_ema")
V2_METRICS = (NORMALISED, PRIMARY, "caption_loss", "probe_acc/shape", "diag/image_share", "diag/global_share",
              "sem/cos", "pix/psnr")
V2_REGIMES = {"contrastive": "(b) frozen contrastive encoder", "self_distill": "(c) frozen self-distilled encoder",
              "scratch": "(a) from scratch"}
FAMILY_SIZES = {"takeaway 1 (v2)": 12, "takeaway 3 (v2)": 6, "takeaway 2 (v2)": 5, "masking (v2)": 4}


def _v2_targets(regime: str, label: str) -> tuple[Study, Study]:
    grid = f"v2_targets_{regime}"
    return (
        Study(grid, f"Generation target, regime {label}", "Takeaway 1",
              "[paper] Generating semantics inside the LLM helps understanding; a pixel loss whose gradient reaches "
              "the LLM hurts it. Here in regime " + label + ".",
              treatment=V2_TREATMENT, baseline=TEXT_ONLY, measures=(Measure(NORMALISED, generation_claim),),
              metrics=V2_METRICS, primary=NORMALISED, family="takeaway 1 (v2)", regime=label,
              extras=(extras.learning_curves, extras.decoded_images, extras.compute_matched)),
        Study(grid, f"Autoregression target, regime {label}", "Takeaway 3",
              "[paper] Autoregression on the LLM input embedding (semantic_input) beats autoregression on the "
              "vision-encoder output (semantic_encoder): better understanding, less cumulative error. Here in "
              "regime " + label + ".",
              treatment=V2_TREATMENT, baseline=pl.col("objective.target") == "semantic_encoder",
              measures=(Measure(NORMALISED, lambda cfg: 1 if _input_embedding(cfg) else 0),
                        Measure(LAST_ROLLOUT, lambda cfg: -1 if _input_embedding(cfg) else 0)),
              metrics=(NORMALISED, LAST_ROLLOUT, "sem/cos", "diag/image_share"), primary=NORMALISED,
              family="takeaway 3 (v2)", regime=label, part="ar_target"),
    )


def _v2_data_scaling(grid: str, regime: str, family: str = "") -> Study:
    """Takeaway 2 in a regime: Holm-judged in `family`, or descriptive (no verdict) without one."""
    return Study(
        grid, f"Data scaling and utilization, regime {V2_REGIMES[regime]}", "Takeaway 2",
        "[paper + summary] Generation gives a better data-scaling trend and higher data utilization: semantic_input "
        "is claimed to beat text only at each D, and its fitted law to rise more steeply. Here in regime "
        + V2_REGIMES[regime] + ".",
        treatment=V2_TREATMENT, baseline=TEXT_ONLY, measures=(Measure(NORMALISED, generation_claim),),
        metrics=(NORMALISED, PRIMARY, "caption_loss", "diag/image_share"), by_scale=True, per_scale=True,
        primary=NORMALISED, family=family, regime=V2_REGIMES[regime], descriptive=not family,
        extras=(data_use.data_utilization,))


V2_STUDIES = (
    Study("v2_pilot", "Anti-collapse pilot (seed 0, regime (b); excluded from verdicts)", "Pilot (no claim)",
          "[protocol 2] Which settings keep semantic_input's visual input from collapsing on a frozen contrastive "
          "encoder; the protocol's rule picks the setting the study's semantic arms use.",
          metrics=V2_METRICS[:5] + ("diag/neighbour_cos", "diag/effective_rank", "sem/cos"), primary=NORMALISED,
          regime=V2_REGIMES["contrastive"], extras=(extras.learning_curves,)),
    *(study for regime, label in V2_REGIMES.items() for study in _v2_targets(regime, label)),
    Study("v2_masking", "Masking, regime " + V2_REGIMES["contrastive"], "Masking",
          "[paper names the technique; the rest is ours] semantic_input trained with MAR's truncated normal or a "
          "Gaussian masking probability (caption loss on the clean sequence) is claimed to beat semantic_input "
          "without masking. Text only under the same masking is the control: no claim, expected null.",
          treatment=("masking.",), baseline=pl.col("masking.distribution") == "none",
          measures=(Measure(NORMALISED, lambda cfg: _gaussian_masking(cfg) * int(cfg.get("objective.target")
                                                                               != "none")),),
          metrics=V2_METRICS[:6], primary=NORMALISED, family="masking (v2)", regime=V2_REGIMES["contrastive"],
          extras=(extras.masking_histograms,)),
    _v2_data_scaling("v2_data_scaling", "contrastive", "takeaway 2 (v2)"),
    _v2_data_scaling("v2_data_scaling_scratch", "scratch"),
)
# Protocol 3 (reports/results/cpu-v3/PROTOCOL.md): the planned comparisons are decided by the protocol's sequential
# rule (reports/decisions.py, the report's lead); each grid's section shows its arms in units they share, beside
# their baselines, descriptively.
V3_METRICS = (NORMALISED, PRIMARY, "zs_norm_se", "caption_loss", "probe_acc/shape", "diag/image_share",
              "diag/image_share_max", "rollout_rel/8", "rollout_rel_mean/8", "rollout_probe", "rollout_probe_true",
              "rollout_probe_copy_last", "chance/rollout_probe")
V3_REGIMES = {"contrastive": "(b) frozen contrastive encoders (5 instances)",
              "self_distill": "(c) frozen self-distilled encoders (5 instances)", "scratch": "(a) from scratch"}


def _v3_targets(regime: str) -> Study:
    label = V3_REGIMES[regime]
    return Study(f"v3_targets_{regime}", f"Generation target, regime {label} (protocol 3)", "Takeaways 1 and 3",
                 "[paper] Generating semantics inside the LLM helps understanding, pixels reaching the LLM hurt it; "
                 "autoregression on the input embedding beats it on the encoder output. Decided in the lead table; "
                 "here every arm in units the arms share, beside its baselines. Regime " + label + ".",
                 treatment=V2_TREATMENT, baseline=TEXT_ONLY, measures=(Measure(NORMALISED, generation_claim),),
                 metrics=V3_METRICS, primary=NORMALISED, regime=label, descriptive=True,
                 extras=(extras.learning_curves, extras.rollout))


V3_STUDIES = (
    *(_v3_targets(regime) for regime in V3_REGIMES),
    Study("v3_data_scaling", "Data scaling and utilization, regime " + V3_REGIMES["contrastive"] + " (protocol 3)",
          "Takeaway 2",
          "[paper + summary] Generation uses limited data better: semantic_input against text only over D, at "
          "fixed samples seen and at one epoch. Its planned comparisons (D = 1e3, 1e4 at fixed samples seen) are "
          "decided in the lead table; the fitted laws are descriptive.",
          treatment=V2_TREATMENT, baseline=TEXT_ONLY, measures=(Measure(NORMALISED, generation_claim),),
          metrics=(NORMALISED, PRIMARY, "caption_loss", "diag/image_share", "diag/image_share_max"), by_scale=True,
          per_scale=True, primary=NORMALISED, regime=V3_REGIMES["contrastive"], descriptive=True,
          extras=(data_use.data_utilization,)),
    Study("v3_masking", "Masking, regime " + V3_REGIMES["contrastive"] + " (protocol 3)", "Masking",
          "[paper names the technique; the rest is ours] semantic_input with MAR's truncated-normal masking against "
          "unmasked; text only under both (trained once: masking without a generation head changes nothing). Its "
          "planned comparison (masking_b) is decided in the lead table.",
          treatment=("masking.",), baseline=pl.col("masking.distribution") == "none",
          measures=(Measure(NORMALISED, _gaussian_masking),), metrics=V3_METRICS[:7], primary=NORMALISED,
          regime=V3_REGIMES["contrastive"], descriptive=True, extras=(extras.masking_histograms,)),
)
DEMO_STUDY = Study(
    "v2_demo", "Demo: the v2 pipeline at demo scale", "Demo (not the study)",
    "[make demo] Takeaway 1's question in minutes: semantic_input on a frozen contrastive encoder against text "
    "only. Demo-scale verdicts are not the study's.",
    treatment=V2_TREATMENT, baseline=TEXT_ONLY, measures=(Measure(NORMALISED, generation_claim),),
    metrics=V2_METRICS[:6], primary=NORMALISED, extras=(extras.learning_curves,))
ALL_STUDIES = V1_STUDIES + V2_STUDIES + V3_STUDIES + (DEMO_STUDY,)
STUDIES = {s.grid: s for s in ALL_STUDIES if not s.part}  # each grid's first study, in report order


def studies_for(grid: str) -> tuple[Study, ...]:
    """The studies of a grid; a grid the paper has no claim for gets seed statistics only."""
    return tuple(s for s in ALL_STUDIES if s.grid == grid) or (Study(grid, grid.replace("_", " ").capitalize()),)
