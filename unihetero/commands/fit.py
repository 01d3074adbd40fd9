"""`unihetero fit`: fit a scaling law to a CSV of runs, with bootstrap 95% intervals; or, given a fitted law's
parameters, predict with it.

    unihetero fit FILE --form FORM --x COLS --y COL [--fix NAME=VALUE ...] [--tie alpha=beta] [--start-grid SPEC]
                  [--bootstrap K] [--json]
    unihetero fit --form FORM --params P.json --predict X.csv --x COLS

With every parameter free, the power-sum forms take `analysis.scaling`'s fast path; a data-constrained law, frozen
(`--fix`) or tied (`--tie`) parameters, or a start grid (`--start-grid "R_D=6.67,13.33,20;R_N=6.67,13.33,20"`,
natural units, the other free parameters keeping their default grids) take `analysis.laws`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from analysis import laws, scaling
from study.errors import UserError
from unihetero.commands.argtypes import nonnegative_int, positive_float, positive_int
from unihetero.commands.derive import derive

INPUT_HINT = {"power": "D", "bounded": "D", "chinchilla": "N then D", "data_constrained": "N, D then U"}


def register(sub: argparse._SubParsersAction) -> None:
    """The `fit` command's arguments."""
    p = sub.add_parser(
        "fit",
        help="fit a scaling law (power, chinchilla, bounded, data_constrained) to a CSV of runs, or predict",
        description="Fit a scaling law: log-sum-exp form, Huber loss on log residuals, L-BFGS from a grid "
        "of starts; bootstrap intervals refit every resample from many starts.",
    )
    p.add_argument("csv", type=Path, nargs="?", help="CSV file, one row per run (not with --predict)")
    p.add_argument("--form", choices=list(laws.LAWS), required=True, help="the law to fit")
    p.add_argument(
        "--x", required=True,
        help="input column(s), comma-separated: D (power, bounded); N,D (chinchilla); N,D,U (data_constrained)"
    )
    p.add_argument("--y", help="target column: a loss (power, chinchilla, data_constrained) or an accuracy (bounded)")
    p.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                   help="hold a parameter at a value in natural units (A, not log A; repeatable)")
    p.add_argument("--tie", action="append", default=[], metavar="NAME=NAME",
                   help="make the first parameter equal the second, e.g. beta=alpha or alpha=beta (repeatable)")
    p.add_argument("--start-grid", metavar="SPEC",
                   help='start values per parameter, natural units: "R_D=6.67,13.33,20;R_N=6.67,13.33,20"')
    p.add_argument("--params", type=Path, metavar="P.json",
                   help="a fitted law's parameters (this command's --json, or a file with just 'params')")
    p.add_argument("--predict", type=Path, metavar="X.csv", help="with --params: one prediction per row of X.csv")
    p.add_argument(
        "--derive",
        action="append",
        default=[],
        metavar="NAME=EXPR",
        help='add a column from others with + - * / ( ) and numbers, e.g. "D=Training FLOP/(6*Model Size)"; '
        "put names holding those characters in double quotes (repeatable)",
    )
    p.add_argument(
        "--drop-highest",
        type=nonnegative_int,
        default=0,
        metavar="K",
        help="drop the K rows with the largest y",
    )
    p.add_argument(
        "--bootstrap",
        type=nonnegative_int,
        default=0,
        metavar="B",
        help="bootstrap resamples (0: no intervals)",
    )
    p.add_argument(
        "--starts", type=positive_int, default=None, help="random subset of the start grid (default: all)"
    )
    p.add_argument("--workers", type=positive_int, default=1, help="processes for the fits")
    p.add_argument("--huber-delta", type=positive_float, default=1e-3, metavar="D")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the fit as JSON")
    p.set_defaults(func=run)


# -----------------------------------------------------------------------------
# loading and running


def _read(path: Path, args: argparse.Namespace, columns: list[str]) -> pl.DataFrame:
    """`path` as a frame (with --derive's columns) whose `columns` are Float64, rows with nulls dropped."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        df = pl.read_csv(path, infer_schema_length=None)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise UserError(f"{path}: cannot read as CSV ({str(e).splitlines()[0]})") from None
    for spec in args.derive:
        df = derive(df, spec, path)
    for c in columns:
        if c not in df.columns:
            raise UserError(f"{path}: no column {c!r}; columns: {', '.join(df.columns)}")
        try:
            df = df.with_columns(pl.col(c).cast(pl.Float64, strict=True))
        except pl.exceptions.PolarsError:
            raise UserError(f"{path}: column {c!r} has non-numeric values") from None
    return df.select(columns).drop_nulls().drop_nans()


def _x_columns(args: argparse.Namespace) -> list[str]:
    k = len(laws.LAWS[args.form].inputs)
    x_cols = [c.strip() for c in args.x.split(",")]
    if len(x_cols) != k:
        raise UserError(f"--form {args.form} takes {k} --x column(s) ({INPUT_HINT[args.form]}), got {args.x!r}")
    return x_cols


def _load(args: argparse.Namespace) -> tuple[pl.DataFrame, list[str]]:
    """The rows to fit (x columns then y, Float64, no nulls) and the x column names."""
    path = args.csv
    if path is None or args.y is None:
        raise UserError("fit: give a CSV FILE and --y (or --params with --predict)")
    x_cols = _x_columns(args)
    rows = _read(path, args, [*x_cols, args.y])
    if args.drop_highest >= len(rows):
        raise UserError(f"--drop-highest {args.drop_highest}: {path} has only {len(rows)} usable rows")
    return rows.sort(args.y, descending=True).slice(args.drop_highest), x_cols


def _pairs(items: list[str], option: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise UserError(f"{option} {item!r}: expected NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{what}: {text!r} is not a number") from None


def _law_options(args: argparse.Namespace) -> dict:
    """--fix, --tie and --start-grid as fit_law's keyword arguments."""
    fixed = {k: _number(v, f"--fix {k}") for k, v in _pairs(args.fix, "--fix").items()}
    grid = {}
    for part in filter(None, (args.start_grid or "").split(";")):
        name, values = next(iter(_pairs([part], "--start-grid").items()))
        grid[name] = tuple(_number(v, f"--start-grid {name}") for v in values.split(","))
    return {"fixed": fixed, "ties": _pairs(args.tie, "--tie"), "start_grid": grid or None}


def run(args: argparse.Namespace) -> int:
    """`unihetero fit CSV`: fit a scaling law, or predict from fitted parameters."""
    if args.predict or args.params:
        return run_predict(args)
    if args.form == "data_constrained" or args.fix or args.tie or args.start_grid:
        return run_law(args)
    rows, x_cols = _load(args)
    try:
        fit = scaling.fit(
            args.form,
            rows.select(x_cols).to_numpy(),
            rows[args.y].to_numpy(),
            huber_delta=args.huber_delta,
            starts=args.starts,
            n_boot=args.bootstrap,
            seed=args.seed,
            workers=args.workers,
        )
    except ValueError as e:
        raise UserError(f"{args.csv}: {e}") from None

    if args.json:
        out = {"csv": str(args.csv), "x": x_cols, "y": args.y, "dropped_highest": args.drop_highest,
               "objective": fit.loss}
        print(json.dumps(out | fit.to_dict(include_boot=False), indent=2))
        return 0
    print(f"{args.form}: {scaling.FORMS[args.form].formula}")
    dropped = f"; {args.drop_highest} with the highest y dropped" if args.drop_highest else ""
    print(f"{fit.n_points} points from {args.csv} (x: {', '.join(x_cols)}; y: {args.y}{dropped})")
    print(f"Huber delta {fit.huber_delta:g} on log residuals, {fit.n_starts} starts, loss {fit.loss:.6g}")
    if not fit.intervals:
        print("no intervals: pass --bootstrap B")
    else:
        print(f"{len(fit.boot_params)} bootstrap resamples, {100 * scaling.LEVEL:.0f}% percentile intervals")
    print()
    print(f"{'param':<8}{'estimate':>14}  interval")
    for name, value in fit.params.items():
        lo_hi = fit.intervals.get(name)
        interval = f"[{lo_hi[0]:.5g}, {lo_hi[1]:.5g}]" if lo_hi else "-"
        print(f"{name:<8}{value:>14.6g}  {interval}")
    return 0


def run_law(args: argparse.Namespace) -> int:
    """A fit through `analysis.laws` (frozen or tied parameters, start grids, the data-constrained law)."""
    rows, x_cols = _load(args)
    try:
        fit = laws.fit_law(args.form, rows.select(x_cols).to_numpy(), rows[args.y].to_numpy(), **_law_options(args),
                           starts=args.starts, n_boot=args.bootstrap, seed=args.seed, huber_delta=args.huber_delta)
    except ValueError as e:
        raise UserError(f"{args.csv}: {e}") from None
    out = {"csv": str(args.csv), "x": x_cols, "y": args.y, "dropped_highest": args.drop_highest} | fit.to_dict()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{args.form}: {laws.LAWS[args.form].formula}")
    print(f"{fit.n_points} points from {args.csv}; {fit.n_starts} starts; objective (sum of Huber losses of the log "
          f"residuals) {fit.objective:.7g}; R^2 {fit.r2:.4f}")
    print(f"{'param':<8}{'estimate':>16}  interval")
    for name, value in fit.params.items():
        how = "fixed" if name in fit.fixed else f"= {fit.ties[name]}" if name in fit.ties else ""
        lo_hi = fit.intervals.get(name)
        interval = f"[{lo_hi[0]:.5g}, {lo_hi[1]:.5g}]" if lo_hi else how or "-"
        print(f"{name:<8}{value:>16.8g}  {interval}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """One prediction per row of --predict, in full float64 precision, from --params."""
    if not (args.predict and args.params):
        raise UserError("fit: --predict X.csv and --params P.json go together")
    try:
        params = json.loads(args.params.read_text())["params"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"--params {args.params}: not a JSON file with a 'params' object ({e.__class__.__name__})") \
            from None
    law = laws.LAWS[args.form]
    missing = [p for p in law.params if p not in params]
    if missing:
        raise UserError(f"--params {args.params}: no value for {', '.join(missing)} (form {args.form} needs "
                        f"{', '.join(law.params)})")
    x_cols = _x_columns(args)
    x = _read(args.predict, args, x_cols).to_numpy()
    for value in laws.predict(args.form, {p: float(params[p]) for p in law.params}, x):
        print(repr(float(value)))
    return 0
