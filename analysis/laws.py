"""Scaling laws as values: fitted with some parameters frozen or tied, and laws whose inputs are effective
quantities, such as the data-constrained law of Muennighoff et al. (2023):

    L(N, D, U) = E + A / N'^alpha + B / D'^beta
    D' = U + U R*_D (1 - exp(-R_D / R*_D)),   R_D = max(D / U - 1, 0)          (repeated data loses value)
    N' = U_N + U_N R*_N (1 - exp(-R_N / R*_N)),  U_N = min(N, N_opt(U)),  R_N = max(N / U_N - 1, 0)
    N_opt(U) = G (G U)^(beta / alpha),  G = (alpha A / (beta B))^(1 / (alpha + beta))   (from the base law)

R*_D is how many repetitions of the unique data leave it worth 1/e of fresh data: one number of data utilization.

The method is `analysis.scaling`'s: Huber loss (delta 1e-3) on the log residuals, summed, L-BFGS from a grid of
starts, bootstrap intervals that refit every resample from the grid. A, B and E are fitted as logs (the log-sum-exp
parametrisation), exponents as they are, R*_D and R*_N as positive parameters in their own units (L-BFGS-B bounds),
as the published fit does (in log space, 3 of its 9 starts slide to another, slightly lower optimum at R*_D ~ 47:
the objective is flat). `analysis.scaling.fit` is the fast path (analytic gradients) for the power-sum forms with
every parameter free; this module fits any form with `fixed` and `ties`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from analysis.scaling import COEF_GRID, E_GRID, EXPONENT_GRID, LBFGS_OPTIONS, LEVEL

_PERCENTILES = (50 * (1 - LEVEL), 50 * (1 + LEVEL))
LOGGED = ("A", "B", "E")
POSITIVE = ("R_D", "R_N")
R_STAR_GRID = (1.0, 5.0, 15.0, 50.0)
DEFAULT_STARTS = {"A": tuple(np.exp(COEF_GRID)), "B": tuple(np.exp(COEF_GRID)), "E": tuple(np.exp(E_GRID)),
                  "alpha": EXPONENT_GRID, "beta": EXPONENT_GRID, "R_D": R_STAR_GRID, "R_N": R_STAR_GRID}
Params = dict[str, np.ndarray]


def _power(p: Params, x: np.ndarray) -> np.ndarray:
    return p["E"] + p["A"] / x[:, 0] ** p["alpha"]


def _chinchilla(p: Params, x: np.ndarray) -> np.ndarray:
    return p["E"] + p["A"] / x[:, 0] ** p["alpha"] + p["B"] / x[:, 1] ** p["beta"]


def effective_inputs(p: Params, n: np.ndarray, d: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N', D') of the data-constrained law."""
    g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    u_n = np.minimum(n, g * (g * u) ** (p["beta"] / p["alpha"]))
    r_n = np.maximum(n / u_n - 1, 0)
    n_eff = u_n + u_n * p["R_N"] * -np.expm1(-r_n / p["R_N"])
    return n_eff, repeated_data(p, d, u)


def repeated_data(p: Params, s: np.ndarray, u: np.ndarray) -> np.ndarray:
    """D' for `s` samples seen of `u` unique ones (repeated R_D = max(s / u - 1, 0) times)."""
    r_d = np.maximum(s / u - 1, 0)
    return u + u * p["R_D"] * -np.expm1(-r_d / p["R_D"])


def _repetition(p: Params, x: np.ndarray) -> np.ndarray:
    return p["E"] + p["B"] / repeated_data(p, x[:, 0], x[:, 1]) ** p["beta"]


def _data_constrained(p: Params, x: np.ndarray) -> np.ndarray:
    n_eff, d_eff = effective_inputs(p, x[:, 0], x[:, 1], x[:, 2])
    return p["E"] + p["A"] / n_eff ** p["alpha"] + p["B"] / d_eff ** p["beta"]


@dataclass(frozen=True)
class Law:
    """A named scaling law: its formula, inputs, parameters and the function that evaluates it."""

    name: str
    formula: str
    inputs: tuple[str, ...]
    params: tuple[str, ...]
    law: Callable[[Params, np.ndarray], np.ndarray]  # y (the error rate 1 - acc when `bounded`)
    bounded: bool = False


LAWS = {
    "power": Law("power", "L(D) = E + A / D^alpha", ("D",), ("A", "alpha", "E"), _power),
    "chinchilla": Law("chinchilla", "L(N, D) = E + A / N^alpha + B / D^beta", ("N", "D"),
                      ("A", "B", "alpha", "beta", "E"), _chinchilla),
    "bounded": Law("bounded", "acc(D) = 1 - (E + A / D^alpha)", ("D",), ("A", "alpha", "E"), _power, bounded=True),
    "data_constrained": Law("data_constrained", "L(N, D, U) = E + A / N'^alpha + B / D'^beta, D' = U + U R_D (1 - "
                            "exp(-(D/U - 1) / R_D)), N' = U_N + U_N R_N (1 - exp(-(N/U_N - 1) / R_N)), U_N = "
                            "min(N, N_opt(U))", ("N", "D", "U"), ("A", "B", "E", "alpha", "beta", "R_D", "R_N"),
                            _data_constrained),
    # one model size: the data term of the data-constrained law alone (its model term folded into E)
    "repetition": Law("repetition", "L(S, U) = E + B / D'^beta, D' = U + U R_D (1 - exp(-(S/U - 1) / R_D))",
                      ("S", "U"), ("B", "E", "beta", "R_D"), _repetition),
}


@dataclass
class LawFit:
    """A law fitted to points: parameters, bootstrap intervals and the fit's quality."""

    form: str
    params: dict[str, float]  # every parameter, natural units (fixed and tied ones included)
    free: tuple[str, ...]
    fixed: dict[str, float]
    ties: dict[str, str]  # parameter -> the parameter it equals
    intervals: dict[str, tuple[float, float]]
    boot_params: np.ndarray  # (n_boot, len(free))
    objective: float  # sum of Huber losses of the log residuals at the optimum
    r2: float  # of y (not of log y), as the published fits report it
    n_points: int
    n_starts: int
    huber_delta: float
    starts_reaching: list[dict[str, float]] = field(default_factory=list)  # each start's optimum (free params)

    def to_dict(self) -> dict:
        return {"form": self.form, "formula": LAWS[self.form].formula, "params": self.params, "free": list(self.free),
                "fixed": self.fixed, "ties": self.ties, "objective": self.objective, "r2": self.r2,
                "intervals": {k: list(v) for k, v in self.intervals.items()}, "level": LEVEL,
                "n_points": self.n_points, "n_starts": self.n_starts, "huber_delta": self.huber_delta,
                "n_boot": len(self.boot_params)}


def predict(form: str, params: dict[str, float], x: np.ndarray) -> np.ndarray:
    """The law's y (an accuracy for the bounded form) at inputs x (n, k)."""
    law = LAWS[form]
    y = law.law({k: np.float64(v) for k, v in params.items()}, np.asarray(x, dtype=float).reshape(len(x), -1))
    return np.clip(1.0 - y, 0.0, 1.0) if law.bounded else y


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """The Huber loss of residuals `r`: quadratic within `delta`, linear beyond."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def objective(form: str, params: dict[str, float], x: np.ndarray, y: np.ndarray, delta: float = 1e-3) -> float:
    """Sum over points of the Huber loss of the log residual at `params`."""
    law = LAWS[form]
    fitted = 1.0 - y if law.bounded else y
    with np.errstate(all="ignore"):
        pred = law.law({k: np.float64(v) for k, v in params.items()}, x)
        return float(huber(np.log(pred) - np.log(fitted), delta).sum())


def r_squared(form: str, params: dict[str, float], x: np.ndarray, y: np.ndarray) -> float:
    """The fraction of `y`'s variance the fitted law explains."""
    pred = predict(form, params, x)
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


class _Space:
    """The free parameters as the optimiser's vector: logs for A, B, E; bounded positive R*; exponents as they are."""

    def __init__(self, law: Law, fixed: dict[str, float], ties: dict[str, str]):
        self.law, self.fixed, self.ties = law, fixed, ties
        self.free = tuple(p for p in law.params if p not in fixed and p not in ties)

    def to_vector(self, natural: dict[str, float]) -> np.ndarray:
        return np.array([np.log(natural[p]) if p in LOGGED else natural[p] for p in self.free])

    def to_params(self, v: np.ndarray) -> dict[str, float]:
        out = dict(self.fixed)
        for p, value in zip(self.free, v, strict=True):
            out[p] = float(np.exp(value)) if p in LOGGED else float(value)
        for p, source in self.ties.items():
            out[p] = out[source]
        return out

    def bounds(self) -> list[tuple[float | None, float | None]]:
        return [(1e-9, None) if p in POSITIVE else (None, None) for p in self.free]


def start_points(space: _Space, grid: dict[str, tuple[float, ...]] | None, n: int | None,
                 rng: np.random.Generator) -> list[dict[str, float]]:
    """The product of each free parameter's start values (`grid` over the defaults), or a random `n` of them."""
    values = [tuple((grid or {}).get(p, DEFAULT_STARTS[p])) for p in space.free]
    points = [dict(zip(space.free, combo, strict=True)) for combo in itertools.product(*values)]
    if n is not None and n < len(points):
        points = [points[i] for i in rng.choice(len(points), size=n, replace=False)]
    return points


def _best(space: _Space, starts: list[dict[str, float]], x: np.ndarray, logy: np.ndarray,
          delta: float) -> tuple[np.ndarray, float, list[dict[str, float]]]:
    """L-BFGS-B from every start; the lowest optimum (vector, objective) and every start's optimum."""
    def f(v: np.ndarray) -> float:
        with np.errstate(all="ignore"):
            pred = space.law.law({k: np.float64(val) for k, val in space.to_params(v).items()}, x)
            value = huber(np.log(pred) - logy, delta).sum() / delta  # / delta: tolerances that mean something
        return float(value) if np.isfinite(value) else 1e30

    best, best_f, reached = None, np.inf, []
    with threadpool_limits(1, user_api="blas"):
        for start in starts:
            res = minimize(f, space.to_vector(start), method="L-BFGS-B", bounds=space.bounds(),
                           options=LBFGS_OPTIONS)
            reached.append({p: v for p, v in space.to_params(res.x).items() if p in space.free})
            if res.fun < best_f:
                best, best_f = res.x, res.fun
    return best, best_f * delta, reached


def fit_law(form: str, x: np.ndarray, y: np.ndarray, *, fixed: dict[str, float] | None = None,
            ties: dict[str, str] | None = None, start_grid: dict[str, tuple[float, ...]] | None = None,
            starts: int | None = None, n_boot: int = 0, boot_starts: int | None = None, seed: int = 0,
            huber_delta: float = 1e-3) -> LawFit:
    """Fit `form` to (x, y) with `fixed` parameters held and `ties` (parameter -> parameter it equals); start values
    from `start_grid` over the defaults (a random `starts` of them); `n_boot` case-bootstrap resamples, each refitted
    from the grid (a random `boot_starts` of it)."""
    law = LAWS[form]
    fixed, ties = dict(fixed or {}), dict(ties or {})
    unknown = sorted((set(fixed) | set(ties) | set(ties.values()) | set(start_grid or {})) - set(law.params))
    if unknown:
        raise ValueError(f"form {form!r} has no parameter {unknown[0]!r} (parameters: {', '.join(law.params)})")
    x = np.asarray(x, dtype=float).reshape(len(y), -1)
    y = np.asarray(y, dtype=float)
    if x.shape[1] != len(law.inputs):
        raise ValueError(f"form {form!r} takes {len(law.inputs)} input column(s) ({', '.join(law.inputs)})")
    if not (np.all(np.isfinite(x)) and np.all(x > 0) and np.all(np.isfinite(y))):
        raise ValueError("inputs must be finite and positive, targets finite")
    space = _Space(law, fixed, ties)
    if not space.free:
        raise ValueError("every parameter is fixed or tied: nothing to fit")
    if len(y) <= len(space.free):
        raise ValueError(f"{len(space.free)} free parameters need more than {len(y)} points")
    logy = np.log(1.0 - y if law.bounded else y)
    rng = np.random.default_rng(seed)
    grid = start_points(space, start_grid, starts, rng)
    best, loss, reached = _best(space, grid, x, logy, huber_delta)
    params = space.to_params(best)
    boot = np.empty((0, len(space.free)))
    intervals: dict[str, tuple[float, float]] = {}
    if n_boot:
        rows = []
        for child in np.random.SeedSequence([seed, 1]).spawn(n_boot):
            r = np.random.default_rng(child)
            idx = r.integers(0, len(y), len(y))
            v, _, _ = _best(space, start_points(space, start_grid, boot_starts, r), x[idx], logy[idx], huber_delta)
            if v is not None:
                rows.append([space.to_params(v)[p] for p in space.free])
        boot = np.array(rows)
        lo, hi = np.percentile(boot, _PERCENTILES, axis=0)
        intervals = {p: (float(a), float(b)) for p, a, b in zip(space.free, lo, hi, strict=True)}
    return LawFit(form, params, space.free, fixed, ties, intervals, boot, loss, r_squared(form, params, x, y),
                  len(y), len(grid), huber_delta, reached)
