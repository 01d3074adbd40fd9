"""Power (against the noncentral t distribution and simulation), TOST on both sides of the margin, and the
group-sequential procedure's error rates on simulated data, for both nulls: a true difference of 0 (where superior
or inferior must be rare) and of exactly delta (where equivalent must be rare); `unihetero power` from a pilot's
runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from analysis.power import difference_power, equivalence_power, seeds_needed
from analysis.sequential import EQUIVALENT, INCONCLUSIVE, INFERIOR, OPEN, SUPERIOR, Plan, decide, t_boundaries
from tests.run_records import add_v2_metrics, write_membership, write_run, zs_norm_of
from unihetero.cli import main

SIMULATIONS = 2000


@pytest.mark.parametrize(("n", "effect", "sd", "alpha"), [(5, 0.02, 0.015, 0.05), (12, 0.01, 0.02, 0.0125),
                                                         (30, 0.004, 0.01, 0.05)])
def test_difference_power_is_the_noncentral_t_tail_and_matches_simulation(n, effect, sd, alpha):
    df, nc = n - 1, effect * np.sqrt(n) / sd
    crit = stats.t.ppf(1 - alpha / 2, df)
    expected = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    assert difference_power(n, effect, sd, alpha) == pytest.approx(expected, rel=1e-9)
    d = np.random.default_rng(0).normal(effect, sd, (40_000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))
    assert difference_power(n, effect, sd, alpha) == pytest.approx(np.mean(np.abs(t) > crit), abs=0.01)


@pytest.mark.parametrize(("n", "true", "margin", "sd"), [(5, 0.0, 0.02, 0.01), (10, 0.005, 0.02, 0.02),
                                                        (30, 0.01, 0.02, 0.02), (8, 0.02, 0.02, 0.01)])
def test_tost_power_matches_simulation_and_is_at_most_alpha_at_the_margin(n, true, margin, sd):
    rng = np.random.default_rng(1)
    d = rng.normal(true, sd, (40_000, n))
    mean, se = d.mean(1), d.std(1, ddof=1) / np.sqrt(n)
    crit = stats.t.ppf(0.95, n - 1)
    simulated = np.mean((mean - crit * se > -margin) & (mean + crit * se < margin))
    power = equivalence_power(n, true, margin, sd, 0.05)
    assert power == pytest.approx(simulated, abs=0.01)
    if abs(true) >= margin:
        assert power <= 0.05 + 0.005  # at the margin TOST's type I error is at most its level


def test_seeds_needed_is_the_first_n_with_the_power():
    n = seeds_needed(0.02, 0.015, alpha=0.05, power=0.8)
    assert difference_power(n, 0.02, 0.015) >= 0.8 > difference_power(n - 1, 0.02, 0.015)
    m = seeds_needed(0.0, 0.015, alpha=0.05, power=0.8, margin=0.02)
    assert equivalence_power(m, 0.0, 0.02, 0.015) >= 0.8 > equivalence_power(m - 1, 0.0, 0.02, 0.015)
    assert seeds_needed(0.03, 0.015, margin=0.02) is None  # a true difference beyond the margin is never equivalent


def test_tost_decides_on_both_sides_of_the_margin():
    """One look at the cap: an interval inside +-delta is equivalent; one reaching past it is not, even when the
    difference test does not cross either."""
    plan = Plan(alpha=0.05, margin=0.02, cap=10)
    inside = 0.001 + 0.006 * np.array([1, -1, 1, -1, 1, -1, 1, -1, 0.5, -0.5])  # no detectable difference
    across = 0.012 + 0.02 * np.array([1, -1, 1, -1, 1, -1, 1, -1, 0.5, -0.5])
    assert decide(inside, [10], plan).verdict == EQUIVALENT
    d = decide(across, [10], plan)
    assert d.verdict == INCONCLUSIVE and d.equivalence_interval[1] > 0.02 and d.seeds_to_decide is not None
    assert decide(inside + 0.05, [10], plan).verdict == SUPERIOR
    assert decide(-(inside + 0.05), [10], plan).verdict == INFERIOR
    assert decide(-(inside + 0.05), [10], plan, higher_is_better=False).verdict == SUPERIOR
    assert decide(across[:5], [5], plan).verdict == OPEN  # before the cap: more seeds


def test_boundaries_spend_little_early_and_reach_the_fixed_test_at_one_look():
    looks = t_boundaries((3, 6, 9, 12), 12, 0.05)
    assert looks[0] > looks[1] > looks[2] > looks[3] > stats.t.ppf(0.975, 11)  # repeated looks cost the last one
    (single,) = t_boundaries((12,), 12, 0.05)
    assert single == pytest.approx(stats.t.ppf(0.975, 11), rel=0.01)  # one look: the fixed-sample test


def simulate(theta: float, looks: tuple[int, ...], plan: Plan, seed: int) -> dict[str, float]:
    rng, out = np.random.default_rng(seed), {}
    for _ in range(SIMULATIONS):
        d = rng.normal(theta, 1.0, looks[-1])
        sizes = []
        for n in looks:
            sizes.append(n)
            verdict = decide(d[:n], sizes, plan, seeds_to_decide=False).verdict
            if verdict != OPEN:
                break
        out[verdict] = out.get(verdict, 0) + 1 / SIMULATIONS
    return out


@pytest.mark.slow
@pytest.mark.parametrize("looks", [(3, 6, 9, 12), (3, 5, 7, 9, 11, 13, 15)])
@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock"])
def test_sequential_error_rates_stay_within_their_levels(looks, spending):
    """2,000 simulated studies per null, differences in units of their sd, margin 0.5 sd, alpha 0.05; a rate may
    exceed its level by Monte Carlo error only (2 standard errors: 0.0097)."""
    plan = Plan(alpha=0.05, margin=0.5, cap=looks[-1], spending=spending)
    tolerance = 2 * np.sqrt(0.05 * 0.95 / SIMULATIONS)
    null = simulate(0.0, looks, plan, seed=2)
    assert null.get(SUPERIOR, 0) + null.get(INFERIOR, 0) <= 0.05 + tolerance, null
    assert null.get(EQUIVALENT, 0) > 0.02  # and the procedure does decide some nulls as equivalent
    for theta in (0.5, -0.5):
        at_margin = simulate(theta, looks, plan, seed=3)
        assert at_margin.get(EQUIVALENT, 0) <= 0.05 + tolerance, at_margin


PILOT_PROTOCOL = """\
protocol: 3
metric: zs_norm
margin: 0.02
seeds: {first: 3, wave: 2, cap: 9}
assumed_sd: 0.03
families: {t1: "generation helps"}
comparisons:
  - {id: si, family: t1, grid: pilot, arm: semantic_input, baseline: text_only, claim: superior}
  - {id: rollout, family: t1, grid: later, arm: semantic_input, baseline: semantic_encoder, metric: rollout_rel/8,
     higher_is_better: false, margin: 0.1}
"""


def write_pilot(runs: Path, grid: str, finals: dict[str, list[float]]) -> float:
    """A pilot grid of text_only and semantic_input runs with these final zs_acc values; the sd of its paired
    differences in zs_norm."""
    trials = []
    for arm, target in (("text_only", "none"), ("semantic_input", "semantic_input")):
        for seed, final in enumerate(finals[arm]):
            run = write_run(runs, [f"objective.target={target}", f"train.seed={seed}"], [0.24, final])
            add_v2_metrics(run, collapsed=False)
            trials.append(({"arm": arm, "seed": seed}, run))
    write_membership(runs, grid, trials)
    diffs = [zs_norm_of(a) - zs_norm_of(b) for a, b in zip(finals["semantic_input"], finals["text_only"], strict=True)]
    return float(np.std(diffs, ddof=1))


def test_power_reads_the_paired_sd_from_a_pilot_and_keeps_assumed_sds_in_their_metric(tmp_path, capsys):
    """`power --pilot`: the sd of the pilot's paired differences (recomputed here from the finals written), the seeds
    `seeds_needed` gives for it at the comparison's level; a comparison of another metric without pilot pairs does not
    borrow the protocol's assumed_sd (in zs_norm): one line naming it, exit 2, until it states its own."""
    runs = tmp_path / "runs"
    sd = write_pilot(runs, "pilot", {"text_only": [0.60, 0.62, 0.58, 0.61], "semantic_input": [0.64, 0.63, 0.65, 0.6]})
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(PILOT_PROTOCOL)
    argv = ["power", "--protocol", str(protocol), "--pilot", str(runs), "--json"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'rollout' in rollout_rel/8" in err and "in zs_norm" in err

    protocol.write_text(PILOT_PROTOCOL.replace("margin: 0.1}", "margin: 0.1, assumed_sd: 0.08}"))
    assert main(argv) == 0
    rows = {r["comparison"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["si"]["sd"] == pytest.approx(sd) and rows["si"]["sd_from"] == "pilot pilot, 4 pairs"
    assert rows["si"]["alpha"] == 0.025  # the family's 0.05 over its two comparisons
    assert rows["si"]["seeds_difference"] == seeds_needed(0.02, sd, 0.025, 0.8)
    assert (rows["rollout"]["sd"], rows["rollout"]["sd_from"]) == (0.08, "assumed")


def test_power_takes_each_comparisons_sd_from_the_first_pilot_with_pairs_its_own_grid_before_the_like_one(
        tmp_path, capsys):
    """Mid-study planning: `--pilot STUDY --pilot EARLIER`; a comparison with pairs in the study's own grid takes them,
    one without falls through to the earlier study's grid that `--like` names."""
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(PILOT_PROTOCOL.replace("margin: 0.1}", "margin: 0.1, assumed_sd: 0.08}"))
    study, earlier, empty = tmp_path / "study", tmp_path / "earlier", tmp_path / "empty"
    own = write_pilot(study, "pilot", {"text_only": [0.60, 0.62, 0.58], "semantic_input": [0.70, 0.61, 0.66]})
    old = write_pilot(earlier, "old", {"text_only": [0.60, 0.62, 0.58, 0.61],
                                       "semantic_input": [0.64, 0.63, 0.65, 0.6]})
    write_membership(empty, "pilot", [])
    assert abs(own - old) > 0.01

    def si_row(*pilots: Path) -> dict:
        argv = ["power", "--protocol", str(protocol), "--like", "pilot=old", "--json"]
        assert main(argv + [a for p in pilots for a in ("--pilot", str(p))]) == 0
        return {r["comparison"]: r for r in json.loads(capsys.readouterr().out)}["si"]

    row = si_row(study, earlier)
    assert row["sd"] == pytest.approx(own) and row["sd_from"] == f"pilot pilot in {study}, 3 pairs"
    row = si_row(empty, earlier)
    assert row["sd"] == pytest.approx(old) and row["sd_from"] == f"pilot old in {earlier}, 4 pairs"
    row = si_row(earlier, study)  # the order given decides
    assert row["sd"] == pytest.approx(old)
    assert main(["power", "--protocol", str(protocol), "--pilot", str(tmp_path / "nowhere")]) == 2
    assert "power --pilot" in capsys.readouterr().err
