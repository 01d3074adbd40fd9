"""Scaling-law fits, the accepted method: log-sum-exp parametrisation, Huber loss on log residuals,
L-BFGS from a grid of starts, and bootstrap intervals that refit every resample from many starts.

Every form is one law in log space,

    log y_hat = LSE(c_1 - p_1 log x_1, ..., c_k - p_k log x_k, e),

i.e. y_hat = E + sum_j C_j / x_j^p_j with C_j = exp(c_j), E = exp(e). `theta` is the vector
(c_1..c_k, p_1..p_k, e); results are reported in natural units (C_j, p_j, E).

The `bounded` form is for accuracies in [0, 1): the error rate err = 1 - acc follows the power law
err(D) = E + A / D^alpha (E is the irreducible error, so 1 - E is the accuracy ceiling), fitted on
log err exactly like a loss. Predictions are 1 - err_hat clipped to [0, 1]. Use it above chance
level: at or near chance, accuracy is flat in D and no power law describes it.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

LEVEL = 0.95  # coverage of the percentile intervals
_PERCENTILES = (50 * (1 - LEVEL), 50 * (1 + LEVEL))

# the Chinchilla / Epoch grid of starting points
E_GRID = (-1.0, -0.5, 0.0, 0.5, 1.0)
COEF_GRID = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
EXPONENT_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)

LBFGS_OPTIONS = {"ftol": 1e-10}  # fits that reach the same optimum then agree to ~1e-7 in every parameter


@dataclass(frozen=True)
class Form:
    """A parametric scaling form (sums of power terms plus an irreducible E) and its parameter names."""

    name: str
    formula: str
    names: tuple[str, ...]  # natural parameters in theta order: coefficients, exponents, E
    bounded: bool = False  # y is an accuracy; the law is on the error rate 1 - y

    @property
    def k(self) -> int:
        """Number of inputs (power terms)."""
        return (len(self.names) - 1) // 2


FORMS = {
    "power": Form("power", "L(D) = E + A / D^alpha", ("A", "alpha", "E")),
    "chinchilla": Form(
        "chinchilla", "L(N, D) = E + A / N^alpha + B / D^beta", ("A", "B", "alpha", "beta", "E")
    ),
    "bounded": Form("bounded", "acc(D) = 1 - (E + A / D^alpha)", ("A", "alpha", "E"), bounded=True),
}


@dataclass
class ScalingFit:
    """A scaling form fitted by Huber loss on log residuals, with bootstrap intervals."""

    form: str
    params: dict[str, float]
    intervals: dict[str, tuple[float, float]]  # empty without bootstrap
    boot_params: np.ndarray  # (n_boot, n_params), natural units, columns in `params` order
    n_points: int
    loss: float  # sum of Huber losses of the log residuals at the optimum
    huber_delta: float
    n_starts: int
    boot_ids: np.ndarray | None = None  # which resamples `boot_params` holds (those with a finite optimum)

    def to_dict(self, include_boot: bool = True) -> dict:
        """JSON-serialisable view; `include_boot=False` leaves out the resampled parameter sets."""
        d = {
            "form": self.form,
            "formula": FORMS[self.form].formula,
            "params": self.params,
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "level": LEVEL,
            "n_points": self.n_points,
            "loss": self.loss,
            "huber_delta": self.huber_delta,
            "n_starts": self.n_starts,
            "n_boot": len(self.boot_params),
        }
        if include_boot:
            d["boot_params"] = self.boot_params.tolist()
        return d


class Prediction(NamedTuple):
    """A fit's prediction at new inputs, with its bootstrap band."""

    point: np.ndarray
    lo: np.ndarray  # bootstrap band; NaN when the fit has no bootstrap
    hi: np.ndarray


# -----------------------------------------------------------------------------
# the objective


def start_grid(k: int) -> np.ndarray:
    """All grid starts for a k-input law, shape (6^k * 5^k * 5, 2k + 1)."""
    axes = [COEF_GRID] * k + [EXPONENT_GRID] * k + [E_GRID]
    return np.array(list(itertools.product(*axes)))


def _objective(
    theta: np.ndarray, logx: tuple[np.ndarray, ...], logy: np.ndarray, delta: float
) -> tuple[float, np.ndarray]:
    """Sum over points of Huber(log y_hat - log y) / delta, and its gradient. Dividing by delta keeps
    the L-BFGS tolerances meaningful when delta is tiny. logx is one array per input."""
    k = len(logx)
    z = [theta[j] - theta[k + j] * logx[j] for j in range(k)]
    m = np.maximum(z[0], theta[-1])  # log-sum-exp, stabilised by the largest term
    for zj in z[1:]:
        m = np.maximum(m, zj)
    w = [np.exp(zj - m) for zj in z]
    we = np.exp(theta[-1] - m)
    s = we + sum(w)
    r = m + np.log(s) - logy
    dr = np.clip(r, -delta, delta) / delta  # Huber'(r) / delta
    f = (dr * (r - 0.5 * delta * dr)).sum()  # = sum Huber(r) / delta, both branches
    u = dr / s
    grad = np.empty(2 * k + 1)
    for j in range(k):
        uw = u * w[j]
        grad[j] = uw.sum()
        grad[k + j] = -(uw * logx[j]).sum()
    grad[-1] = (u * we).sum()
    return f, grad


def _best_fit(
    starts: np.ndarray, logx: np.ndarray, logy: np.ndarray, delta: float
) -> tuple[np.ndarray, float]:
    """L-BFGS from every start; the optimum with the lowest objective (theta, sum of Huber losses)."""
    cols = tuple(np.ascontiguousarray(c) for c in logx.T)
    best, best_f = np.full(starts.shape[1], np.nan), np.inf
    # one BLAS thread: scipy's L-BFGS-B makes tiny BLAS calls that threaded OpenBLAS slows down many
    # times over, worst on a busy machine (scipy/scipy#22438)
    with threadpool_limits(1, user_api="blas"), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for s in starts:
            res = minimize(
                _objective, s, args=(cols, logy, delta), jac=True, method="L-BFGS-B", options=LBFGS_OPTIONS
            )
            if np.isfinite(res.fun) and res.fun < best_f:
                best, best_f = res.x, res.fun
    return best, best_f * delta


def _parallel(fn: Callable, jobs: list[tuple], workers: int) -> list:
    """[fn(*job) for job in jobs], over `workers` processes when workers > 1."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    # spawn, not fork: the parent may hold threads (polars, torch) that a forked child would inherit locked
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(fn, *zip(*jobs, strict=True)))


def _natural(theta: np.ndarray, k: int) -> np.ndarray:
    """theta (..., 2k + 1) -> natural units (C_j, p_j, E)."""
    out = np.array(theta, dtype=float)
    with np.errstate(over="ignore"):
        out[..., :k] = np.exp(out[..., :k])
        out[..., -1] = np.exp(out[..., -1])
    return out


# -----------------------------------------------------------------------------
# fitting and bootstrap


def _prepare(form: Form, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate inputs; return log x (n, k) and log of the fitted target (n,)."""
    x = np.asarray(x, dtype=float).reshape(len(y), -1)
    y = np.asarray(y, dtype=float)
    if x.shape[1] != form.k:
        raise ValueError(f"form {form.name!r} takes {form.k} input column(s), got {x.shape[1]}")
    if len(y) <= len(form.names):
        raise ValueError(f"form {form.name!r} has {len(form.names)} parameters; need more points than that")
    if not (np.all(np.isfinite(x)) and np.all(x > 0)):
        raise ValueError("inputs must be finite and positive")
    if form.bounded and not np.all((y >= 0) & (y < 1)):
        raise ValueError("accuracies must lie in [0, 1)")
    if not form.bounded and not (np.all(np.isfinite(y)) and np.all(y > 0)):
        raise ValueError("targets must be finite and positive")
    return np.log(x), np.log(1.0 - y if form.bounded else y)


def _pick_starts(grid: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    if n is None or n >= len(grid):
        return grid
    return grid[rng.choice(len(grid), size=n, replace=False)]


def resample_rows(rng: np.random.Generator, n: int, clusters: np.ndarray | None) -> np.ndarray:
    """Row indices of one bootstrap resample: n rows with replacement, or, with `clusters` (a label per row, e.g.
    the seed), whole clusters drawn with replacement from the sorted labels. Two fits drawing with the same
    generator over the same labels draw the same clusters: their resamples pair one to one."""
    if clusters is None:
        return rng.integers(0, n, n)
    labels = np.unique(clusters)
    drawn = labels[rng.integers(0, len(labels), len(labels))]
    return np.concatenate([np.flatnonzero(clusters == c) for c in drawn])


def _boot_chunk(
    logx: np.ndarray,
    logy: np.ndarray,
    delta: float,
    n_starts: int | None,
    seeds: list[np.random.SeedSequence],
    clusters: np.ndarray | None = None,
) -> np.ndarray:
    """Refit each resample from its own random subset of the grid; theta per resample."""
    grid = start_grid(logx.shape[1])
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        idx = resample_rows(rng, len(logy), clusters)
        theta, _ = _best_fit(_pick_starts(grid, n_starts, rng), logx[idx], logy[idx], delta)
        out.append(theta)
    return np.array(out)


def fit(
    form: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    huber_delta: float = 1e-3,
    starts: int | None = None,
    n_boot: int = 0,
    boot_starts: int | None = 32,
    seed: int = 0,
    workers: int = 1,
    clusters: np.ndarray | None = None,
) -> ScalingFit:
    """Fit `form` to points (x, y); x is (n,) or (n, k) with columns in formula order (N then D).

    starts: grid starts for the full-data fit (None: the full grid, an int: a random subset).
    n_boot: bootstrap resamples for 95% percentile intervals: of the points, or with `clusters` (a label per point,
    such as its seed) of whole clusters, so that points that share a seed move together and two arms fitted
    with the same `seed` over the same seeds get paired resamples (resample i of each draws the same seeds).
    Each resample is refitted from `boot_starts` random grid starts of its own (None: the full grid), never
    warm-started at the full-data optimum. Every resample has its own seed, so results do not depend on `workers`.
    """
    f = FORMS[form]
    logx, logy = _prepare(f, x, y)
    grid = _pick_starts(start_grid(f.k), starts, np.random.default_rng(seed))
    chunks = np.array_split(grid, max(1, min(4 * workers, len(grid))))
    best = _parallel(_best_fit, [(c, logx, logy, huber_delta) for c in chunks], workers)
    theta, loss = min(best, key=lambda b: b[1])
    params = dict(zip(f.names, _natural(theta, f.k).tolist(), strict=True))

    boot = np.empty((0, len(f.names)))
    intervals: dict[str, tuple[float, float]] = {}
    if n_boot > 0:
        seeds = np.random.SeedSequence([seed, 1]).spawn(n_boot)
        chunks = [list(c) for c in np.array_split(np.array(seeds, dtype=object), min(4 * workers, n_boot))]
        parts = _parallel(_boot_chunk, [(logx, logy, huber_delta, boot_starts, c, clusters) for c in chunks],
                          workers)
        boot = _natural(np.concatenate(parts), f.k)
        kept = np.all(np.isfinite(boot), axis=1)  # a resample whose every start diverged is left out
        boot, ids = boot[kept], np.flatnonzero(kept)
        lo, hi = np.percentile(boot, _PERCENTILES, axis=0)
        intervals = {n: (float(a), float(b)) for n, a, b in zip(f.names, lo, hi, strict=True)}
        return ScalingFit(form, params, intervals, boot, len(logy), float(loss), huber_delta, len(grid), ids)
    return ScalingFit(form, params, intervals, boot, len(logy), float(loss), huber_delta, len(grid))


# -----------------------------------------------------------------------------
# prediction


def _law(f: Form, nat: np.ndarray, logx: np.ndarray) -> np.ndarray:
    """y for parameter sets nat (m, 2k + 1) at inputs logx (n, k): (m, n)."""
    coef, expo = nat[:, None, : f.k], nat[:, None, f.k : 2 * f.k]
    y = nat[:, -1:] + (coef * np.exp(-expo * logx)).sum(axis=-1)
    return np.clip(1.0 - y, 0.0, 1.0) if f.bounded else y


def predict(fit: ScalingFit, x: np.ndarray) -> Prediction:
    """Point prediction at x ((n,) or (n, k)) and the 95% band over the bootstrap parameter sets."""
    f = FORMS[fit.form]
    x = np.asarray(x, dtype=float)
    logx = np.log(x.reshape(x.shape[0] if x.ndim else 1, -1))
    point = _law(f, np.array([list(fit.params.values())]), logx)[0]
    if len(fit.boot_params) == 0:
        nan = np.full_like(point, np.nan)
        return Prediction(point, nan, nan.copy())
    lo, hi = np.percentile(_law(f, fit.boot_params, logx), _PERCENTILES, axis=0)
    return Prediction(point, lo, hi)
