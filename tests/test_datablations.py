"""The data-constrained scaling law checked against its published fit (Muennighoff et al. 2023) on the published runs
(analysis/data/datablations_c4_points.csv): the objective and R^2 at the published parameters, R*_D and R*_N fitted
from the paper's own start grid with the base law frozen, the flatness of the objective (a wider grid finds lower
optima at much larger R*_D), and a bootstrap interval over runs that is wide; and a fitted law as a value that
predicts, through `unihetero fit --predict`."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from analysis.laws import effective_inputs, fit_law, objective, predict, r_squared
from analysis.reference_data import DATABLATIONS_CSV
from unihetero.cli import main

BASE = {"A": math.exp(6.255414), "B": math.exp(7.3049974), "E": math.exp(0.6254804), "alpha": 0.3526596}
PUBLISHED = {**BASE, "beta": 0.3526596, "R_D": 15.387756, "R_N": 5.309743}
PAPER_STARTS = {"R_D": (6.67, 13.33, 20.0), "R_N": (6.67, 13.33, 20.0)}  # linspace(0, 20, 4) without its zero


@pytest.fixture(scope="module")
def runs() -> tuple[np.ndarray, np.ndarray]:
    d = pl.read_csv(DATABLATIONS_CSV)
    return d.select("N_params", "D_tokens", "U_unique_tokens").to_numpy().astype(float), d["val_loss"].to_numpy()


def test_the_published_parameters_give_the_published_objective_and_r2(runs):
    x, y = runs
    assert len(y) == 182
    assert objective("data_constrained", PUBLISHED, x, y) == pytest.approx(0.0158259, rel=1e-4)
    assert r_squared("data_constrained", PUBLISHED, x, y) == pytest.approx(0.7722, abs=5e-4)


def test_r_star_from_the_papers_starts_with_the_base_law_frozen(runs):
    x, y = runs
    fit = fit_law("data_constrained", x, y, fixed=BASE, ties={"beta": "alpha"}, start_grid=PAPER_STARTS)
    assert fit.params["R_D"] == pytest.approx(15.39, abs=0.3) and fit.params["R_N"] == pytest.approx(5.31, abs=0.1)
    assert fit.objective == pytest.approx(0.0158259, rel=1e-4) and fit.params["beta"] == BASE["alpha"]
    assert all(r["R_D"] == pytest.approx(fit.params["R_D"], abs=0.3) for r in fit.starts_reaching)  # all 9 agree


def test_the_objective_is_flat_a_wider_grid_finds_lower_optima_at_much_larger_r_star(runs):
    x, y = runs
    wide = fit_law("data_constrained", x, y, fixed=BASE, ties={"beta": "alpha"},
                   start_grid={"R_D": (6.67, 13.33, 20.0, 40.0, 100.0), "R_N": (1.0, 2.0, 6.67, 20.0)})
    assert wide.objective < 0.0158259 * (1 - 5e-4) and wide.params["R_D"] > 40
    assert wide.objective > 0.0158259 * 0.99  # lower, but only slightly: the objective is flat


@pytest.mark.slow
def test_a_bootstrap_over_runs_gives_a_wide_interval_that_holds_the_published_r_star(runs):
    x, y = runs
    fit = fit_law("data_constrained", x, y, fixed=BASE, ties={"beta": "alpha"}, start_grid=PAPER_STARTS, n_boot=40)
    lo, hi = fit.intervals["R_D"]
    assert lo < 15.39 < hi and hi / lo > 3


def test_fit_json_and_predict_give_the_law_as_a_value(runs, tmp_path, capsys):
    x, y = runs
    fixes = [a for k, v in BASE.items() for a in ("--fix", f"{k}={v!r}")]
    assert main(["fit", str(DATABLATIONS_CSV), "--form", "data_constrained", "--x", "N_params,D_tokens,U_unique_tokens",
                 "--y", "val_loss", *fixes, "--tie", "beta=alpha", "--start-grid",
                 "R_D=6.67,13.33,20;R_N=6.67,13.33,20", "--json"]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert set(fitted["params"]) == {"A", "B", "E", "alpha", "beta", "R_D", "R_N"} and "objective" in fitted
    (tmp_path / "law.json").write_text(json.dumps({"params": PUBLISHED}))  # a hand-written one: just params
    points = np.array([[2.8e9, 5.5e10, 4e9], [8.7e9, 1.78e11, 1.78e11], [1e9, 1e11, 1e9]])
    pl.DataFrame(points, schema=["N", "D", "U"], orient="row").write_csv(tmp_path / "x.csv")
    assert main(["fit", "--form", "data_constrained", "--params", str(tmp_path / "law.json"), "--predict",
                 str(tmp_path / "x.csv"), "--x", "N,D,U"]) == 0
    printed = [float(v) for v in capsys.readouterr().out.split()]
    assert printed == predict("data_constrained", PUBLISHED, points).tolist()  # full float64 precision
    params = {k: np.float64(v) for k, v in PUBLISHED.items()}
    _, d_eff = effective_inputs(params, points[:, 0], points[:, 1], points[:, 2])
    assert d_eff[1] == points[1, 2]  # one epoch (D = U): the data is worth its size
    assert points[0, 2] < d_eff[0] < points[0, 1]  # repeated: worth more than U, less than D
