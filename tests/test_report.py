"""The report: a synthetic runs directory holding every study's grid (with known effects, a failed run, a
corrupt one and a trial never started) gives report.md, a self-contained report.html, CSVs and figures
with the verdicts the effects imply."""

from __future__ import annotations

import base64
import json
import re
import struct
import subprocess
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest

from analysis.utilization import FitSettings
from reports.build import build_report
from reports.render import fmt_ci, html_table
from tests.browser import FLAGS, chromium
from tests.run_records import write_membership, write_run

SEEDS = (0, 1, 2)
FIT = FitSettings(n_boot=30, boot_starts=4, starts=10)


def _generation_target(runs: Path, rng: np.random.Generator) -> None:
    trials = []
    for arm, target, grad, delta in (("text_only", "none", True, 0.0), ("semantic_input", "semantic_input", True, 0.06),
                                     ("pixel_grad", "pixel", True, -0.06), ("pixel_detached", "pixel", False, 0.0)):
        for seed in SEEDS:
            s = 0.01 * seed + rng.normal(0, 0.002)
            early = -0.05 if delta > 0 else delta / 2  # the semantic arm starts lower, then overtakes
            curve = [0.25, 0.40 + early + s, 0.50 + delta / 2 + s, 0.60 + delta + s]
            p = write_run(runs, ["eval.num_images=5", f"objective.target={target}",
                                 f"objective.pixel_grad_to_llm={grad}", f"train.seed={seed}"], curve,
                          extra={"pix/psnr": 12.0 + seed} if target == "pixel" else {})
            if target == "pixel":
                x = rng.random((4, 3, 16, 16)).astype(np.float32)
                np.savez(p / "samples.npz", original=x, decoded=np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1))
            trials.append(({"arm": arm, "objective.target": target, "objective.pixel_grad_to_llm": grad,
                            "seed": seed}, p))
    failed = write_run(runs, ["eval.num_images=5", "objective.target=semantic_encoder"], [0.25, 0.3], state="failed")
    trials.append(({"arm": "semantic_encoder", "objective.target": "semantic_encoder", "seed": 0}, failed))
    never = runs / "feedfacecafe"  # listed in the grid, never started
    trials.append(({"arm": "semantic_encoder", "objective.target": "semantic_encoder", "seed": 1}, never))
    write_membership(runs, "generation_target", trials)


def _data_scaling(runs: Path, rng: np.random.Generator) -> None:
    trials = []
    for arm, target, k in (("text_only", "none", 1.0), ("semantic_input", "semantic_input", 3.0)):
        for d in (50, 100, 200, 400, 800, 1600):
            for seed in SEEDS[:2]:
                acc = 1 - (0.1 + 2.0 * (k * d) ** -0.5) * np.exp(rng.normal(0, 0.01))
                p = write_run(runs, ["eval.num_images=6", f"objective.target={target}", f"data.unique_samples={d}",
                                     f"train.seed={seed}"], [0.25, 0.8 * acc, acc])
                trials.append(({"arm": arm, "objective.target": target, "regime": "fixed",
                                "data.unique_samples": d, "seed": seed}, p))
    write_membership(runs, "data_scaling", trials)


def _ar_target(runs: Path, rng: np.random.Generator) -> None:
    trials = []
    for arm, target, err in (("input_embedding", "semantic_input", 0.2), ("encoder_output", "semantic_encoder", 0.4)):
        for seed in SEEDS:
            rollout = {f"rollout_err/{k}": err * k ** 0.5 + rng.normal(0, 0.01) for k in (1, 2, 3)}
            p = write_run(runs, ["eval.num_images=7", f"objective.target={target}", f"train.seed={seed}"],
                          [0.25, 0.5 + rng.normal(0, 0.01)], extra=rollout)
            trials.append(({"arm": arm, "objective.target": target, "seed": seed}, p))
    write_membership(runs, "ar_target", trials)


def _mask_distribution(runs: Path, rng: np.random.Generator) -> None:
    trials = []
    for arm, over in (("none", []), ("gauss", ["masking.distribution=gaussian", "masking.mean=0.5"]),
                      ("truncnorm_mar", ["masking.distribution=truncnorm"]),
                      ("uniform", ["masking.distribution=uniform", "masking.low=0.0"])):
        for seed in SEEDS:
            p = write_run(runs, ["eval.num_images=9", "objective.target=semantic_input", *over, f"train.seed={seed}"],
                          [0.25, 0.5 + 0.01 * seed + rng.normal(0, 0.01)])
            trials.append(({"arm": arm, "seed": seed}, p))
    write_membership(runs, "mask_distribution", trials)


def _against_text_only(runs: Path, rng: np.random.Generator, grid: str, num_images: int,
                       arms: tuple[tuple[str, list[str], float], ...]) -> None:
    """A follow-up grid: text only and generation arms whose zs_acc differs from it by a known delta."""
    trials = []
    for arm, over, delta in (("text_only", ["objective.target=none"], 0.0), *arms):
        for seed in SEEDS:
            p = write_run(runs, [f"eval.num_images={num_images}", *over, f"train.seed={seed}"],
                          [0.25, 0.5 + delta + 0.01 * seed + rng.normal(0, 0.002)])
            trials.append(({"arm": arm, "seed": seed}, p))
    write_membership(runs, grid, trials)


def _masked_generation(runs: Path, rng: np.random.Generator) -> None:
    """Masking turns semantic generation from a loss into a gain against text only."""
    _against_text_only(runs, rng, "masked_generation", 13, (
        ("semantic_input", ["objective.target=semantic_input"], -0.05),
        ("si+gauss", ["objective.target=semantic_input", "masking.distribution=gaussian", "masking.mean=0.5"], 0.05)))


def _semantic_weight(runs: Path, rng: np.random.Generator) -> None:
    """A lighter semantic loss turns semantic generation from a loss into a gain against text only."""
    _against_text_only(runs, rng, "semantic_weight", 14, (
        ("semantic_w1", ["objective.target=semantic_input"], -0.05),
        ("semantic_w.1", ["objective.target=semantic_input", "objective.semantic_weight=0.1"], 0.05)))


def _inference_scaling(runs: Path, rng: np.random.Generator) -> None:
    trials = []
    for arm, target in (("text_only", "none"), ("pixel_detached", "pixel")):
        for seed in SEEDS:
            inference = {"views": [{"views": v, "inference_flops_per_image": 1e6 * v,
                                    "zs_acc": 0.5 + 0.02 * v + 0.01 * seed} for v in (1, 2, 4)],
                         "diffusion_steps": [{"diffusion_steps": s, "psnr": 10 + s + rng.normal(0, 0.1),
                                              "inference_flops_per_image": 1e5 * s} for s in (2, 4)]
                         if target == "pixel" else []}
            p = write_run(runs, ["eval.num_images=10", f"objective.target={target}",
                                 "objective.pixel_grad_to_llm=false", f"train.seed={seed}"], [0.25, 0.5],
                          inference=inference)
            trials.append(({"arm": arm, "objective.target": target, "seed": seed}, p))
    write_membership(runs, "inference_scaling", trials)


def _loss_weight(runs: Path, rng: np.random.Generator) -> None:
    trials = []
    for w in (0.3, 1.0):
        for seed in SEEDS:
            p = write_run(runs, ["eval.num_images=11", "objective.target=semantic_input",
                                 f"objective.semantic_weight={w}", f"train.seed={seed}"], [0.25, 0.5 + 0.05 * w])
            trials.append(({"arm": "semantic", "objective.semantic_weight": w, "seed": seed}, p))
    write_membership(runs, "loss_weight", trials)


@pytest.fixture(scope="module")
def study_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("world") / "runs"
    rng = np.random.default_rng(0)
    for make in (_generation_target, _data_scaling, _ar_target, _mask_distribution, _masked_generation,
                 _semantic_weight, _inference_scaling, _loss_weight):
        make(runs, rng)
    corrupt = write_run(runs, ["eval.num_images=12"], [0.25, 0.45])  # outside every grid, with a corrupt line
    with open(corrupt / "eval.jsonl", "a") as f:
        f.write("{broken\n")
    return runs


@pytest.fixture(scope="module")
def report(study_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corrupt line's warning is tested in test_analysis_runs
        build_report(study_world, out, fit=FIT)
    return out


def _verdicts(report: Path) -> pl.DataFrame:
    return pl.read_csv(report / "tables" / "verdicts.csv")


def _verdict(df: pl.DataFrame, study: str, comparison: str, measure: str) -> str:
    rows = df.filter((pl.col("study") == study) & (pl.col("comparison") == comparison)
                     & pl.col("measure").str.contains(measure, literal=True))
    assert len(rows) == 1, (comparison, measure, df.select("comparison", "measure"))
    return rows["verdict"][0]


@pytest.mark.slow
def test_report_files(report: Path):
    assert (report / "report.md").stat().st_size > 1000
    html = (report / "report.html").read_text()
    for name in ("verdicts", "generation_target__smoke_arms", "generation_target__smoke_comparisons",
                 "data_scaling__smoke_utilization", "data_scaling__smoke_fits", "ar_target__smoke_rollout",
                 "inference_scaling__smoke_inference", "problem_runs", "missing_runs", "run_status"):
        assert (report / "tables" / f"{name}.csv").stat().st_size > 20, name
    pngs = sorted((report / "figures").glob("*.png"))
    names = {p.stem for p in pngs}
    assert {"generation_target__smoke_bars", "generation_target__smoke_learning", "generation_target__smoke_decoded",
            "data_scaling__smoke_scaling_zs_acc", "data_scaling__smoke_scaling_caption_loss",
            "mask_distribution__smoke_masking", "ar_target__smoke_rollout",
            "inference_scaling__smoke_inference"} <= names
    for png in pngs:
        assert png.with_suffix(".svg").stat().st_size > 1000
        width, height = struct.unpack(">II", png.read_bytes()[16:24])
        assert 300 <= width <= 4000 and 150 <= height <= 4000, (png.name, width, height)
    # self-contained: every image is a data URI, nothing is fetched
    srcs = re.findall(r'src="([^"]*)"', html)
    assert len(srcs) == len(pngs) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for s in srcs)
    assert not re.search(r'(href|src)="(https?:|//|file:)', html)


@pytest.mark.slow
def test_verdicts_follow_the_synthetic_effects(report: Path):
    v = _verdicts(report)
    gen, scale, inference = "Generation target", "Data scaling and utilization", "Inference-time scaling"
    assert _verdict(v, gen, "semantic_input vs text_only", "difference in zs_acc") == "reproduced"
    assert _verdict(v, gen, "pixel_grad vs text_only", "difference in zs_acc") == "reproduced"  # claimed to hurt
    assert _verdict(v, gen, "semantic_input vs text_only", "starts lower, overtakes") == "reproduced"
    assert _verdict(v, scale, "semantic_input vs text_only", "difference in zs_acc") == "reproduced"
    assert _verdict(v, scale, "semantic_input vs text_only", "data multiplier") == "reproduced"
    # exponents equal by construction (the arm is the baseline with 3x the data); two seeds: no verdict
    assert _verdict(v, scale, "semantic_input vs text_only", "scaling exponent") == "inconclusive at this scale"
    assert _verdict(v, scale, "semantic_input vs text_only", "starts lower") == "inconclusive at this scale"
    assert _verdict(v, "Autoregression target", "input_embedding vs encoder_output", "rollout_err/3") == "reproduced"
    assert _verdict(v, inference, "pixel_detached: diffusion_steps 4 vs 2", "psnr") == "reproduced"
    assert _verdict(v, inference, "text_only: views 4 vs 1", "zs_acc") == "reproduced"
    assert _verdict(v, "Masking distribution", "gauss vs none", "zs_acc") != "reproduced"
    masked = "Generation under masking"
    assert _verdict(v, masked, "semantic_input vs text_only", "zs_acc") == "not reproduced"
    assert _verdict(v, masked, "si+gauss vs text_only", "zs_acc") == "reproduced"
    lighter = "Generation under a lighter semantic loss"
    assert _verdict(v, lighter, "semantic_w1 vs text_only", "zs_acc") == "not reproduced"
    assert _verdict(v, lighter, "semantic_w.1 vs text_only", "zs_acc") == "reproduced"
    # no claim for the detached pixel decoder or the loss weight; uniform masking is not a Gaussian
    assert v.filter(pl.col("comparison").str.starts_with("pixel_detached vs")).is_empty()
    assert v.filter(pl.col("study") == "Generation loss weight").is_empty()
    assert v.filter(pl.col("comparison").str.starts_with("uniform")).is_empty()


def test_intervals_are_printed_only_when_they_bound_something():
    assert fmt_ci(0.5, 0.4, 0.6) == "0.5 [0.4, 0.6]"
    assert fmt_ci(0.05, 0.01, float("inf")) == "0.05 [0.01, inf]"  # a one-sided bound still says something
    assert fmt_ci(0.05, float("-inf"), float("inf"), sign=True) == "+0.05"  # one pair: no interval
    assert fmt_ci(0.05, 0.05, 0.05) == "0.05"


def test_every_inconclusive_verdict_is_marked_unsure_in_html():
    verdicts = pl.DataFrame({"verdict": ["reproduced", "inconclusive: too few pairs (1 of 3 needed)", "no claim"]})
    html = html_table(verdicts, "verdicts")
    assert '<td class="ok">reproduced</td>' in html
    assert '<td class="unsure">inconclusive: too few pairs (1 of 3 needed)</td>' in html
    assert "<td>no claim</td>" in html


@pytest.mark.slow
def test_report_lists_left_out_runs(report: Path):
    problems = pl.read_csv(report / "tables" / "problem_runs.csv")
    assert problems.filter(~pl.col("usable"))["reason"].str.starts_with("failed: non-finite loss").all()
    assert problems.filter(pl.col("usable"))["notes"].str.contains("eval.jsonl:3: corrupt record").all()
    missing = pl.read_csv(report / "tables" / "missing_runs.csv")
    assert missing["run_id"].to_list() == ["feedfacecafe"]
    md = (report / "report.md").read_text()
    assert "failed: non-finite loss" in md and "feedfacecafe" in md and "Runs outside any grid" in md


@pytest.mark.slow
def test_report_is_deterministic(study_world: Path, report: Path, tmp_path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_report(study_world, tmp_path, fit=FIT)
    assert (tmp_path / "report.md").read_text() == (report / "report.md").read_text()
    svgs = sorted((report / "figures").glob("*.svg"))
    assert svgs and all((tmp_path / "figures" / f.name).read_bytes() == f.read_bytes() for f in svgs)


def test_report_of_an_empty_runs_dir(tmp_path: Path):
    html = build_report(tmp_path / "runs", tmp_path / "out")
    assert "0 run directories" in html.read_text()
    assert json.loads(json.dumps(pl.read_csv(tmp_path / "out" / "tables" / "run_status.csv").to_dicts())) == []


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path):
    shot = tmp_path / "shot.png"
    cmd = [str(chromium()), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1200,3000", (report / "report.html").resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file() and shot.stat().st_size > 10_000
    pixels = plt.imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels.std() > 0.05  # not blank
    assert (pixels.min(axis=-1) < 0.5).mean() > 0.01  # text, tables and figures drawn


def test_an_erratum_kept_with_the_records_opens_the_report(tmp_path):
    from reports.build import ERRATUM, build_report

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / ERRATUM).write_text("**Erratum (2026-12-06):** these numbers were measured on the wrong world.\n")
    build_report(runs, tmp_path / "out", draw_figures=False)
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.splitlines()[2].startswith("**Erratum (2026-12-06):**")
    assert "Erratum (2026-12-06):" in (tmp_path / "out" / "report.html").read_text()
