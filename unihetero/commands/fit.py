"""`unihetero fit`: fit a scaling law to a CSV of runs, with bootstrap 95% intervals."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import NoReturn

import polars as pl

from analysis import scaling
from study.errors import UserError
from unihetero.commands.argtypes import nonnegative_int, positive_float, positive_int

INPUT_HINT = {"power": "D", "bounded": "D", "chinchilla": "N then D"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="fit a scaling law (power, chinchilla, bounded) to a CSV of runs",
        description="Fit a scaling law: log-sum-exp form, Huber loss on log residuals, L-BFGS from a grid "
        "of starts; bootstrap intervals refit every resample from many starts.",
    )
    p.add_argument("csv", type=Path, help="CSV file, one row per run")
    p.add_argument("--form", choices=list(scaling.FORMS), required=True, help="the law to fit")
    p.add_argument(
        "--x", required=True, help="input column(s), comma-separated: D (power, bounded); N,D (chinchilla)"
    )
    p.add_argument(
        "--y", required=True, help="target column: a loss (power, chinchilla) or an accuracy (bounded)"
    )
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
# --derive: a tiny arithmetic parser over column names, numbers, + - * / and parentheses; no eval

_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|\"(?P<quoted>[^\"]*)\"|(?P<op>[-+*/()])"
    r"|(?P<name>[^-+*/()\"]+))"
)


def _tokens(text: str, spec: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while text[pos:].strip():
        m = _TOKEN.match(text, pos)
        if m is None:
            raise UserError(f"--derive {spec!r}: cannot read {text[pos:].strip()!r}")
        kind = m.lastgroup
        value = m.group(kind)
        out.append(("name" if kind == "quoted" else kind, value.strip() if kind == "name" else value))
        pos = m.end()
    return out


class _Expr:
    """Recursive descent: expr = term (+|- term)*; term = factor (*|/ factor)*; factor = -factor | (expr) |
    number | column."""

    def __init__(self, spec: str, text: str, columns: list[str]):
        self.spec, self.columns = spec, columns
        self.toks, self.i = _tokens(text, spec), 0

    def parse(self) -> pl.Expr:
        e = self.expr()
        if self.i < len(self.toks):
            self.fail(f"unexpected {self.toks[self.i][1]!r}")
        return e

    def fail(self, what: str) -> NoReturn:
        raise UserError(f"--derive {self.spec!r}: {what}; allowed: column names, numbers, + - * / ( )")

    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) and self.toks[self.i][0] == "op" else None

    def expr(self) -> pl.Expr:
        e = self.term()
        while (op := self.peek()) in ("+", "-"):
            self.i += 1
            rhs = self.term()
            e = e + rhs if op == "+" else e - rhs
        return e

    def term(self) -> pl.Expr:
        e = self.factor()
        while (op := self.peek()) in ("*", "/"):
            self.i += 1
            rhs = self.factor()
            e = e * rhs if op == "*" else e / rhs
        return e

    def factor(self) -> pl.Expr:
        if self.i >= len(self.toks):
            self.fail("expression ends early")
        kind, value = self.toks[self.i]
        self.i += 1
        if (kind, value) == ("op", "-"):
            return -self.factor()
        if (kind, value) == ("op", "("):
            e = self.expr()
            if self.peek() != ")":
                self.fail("missing ')'")
            self.i += 1
            return e
        if kind == "num":
            return pl.lit(float(value))
        if kind == "name":
            if value not in self.columns:
                self.fail(f"no column {value!r} (columns: {', '.join(self.columns)})")
            return pl.col(value).cast(pl.Float64)
        self.fail(f"unexpected {value!r}")


def _derive(df: pl.DataFrame, spec: str, path: Path) -> pl.DataFrame:
    name, eq, text = spec.partition("=")
    if not eq or not name.strip() or not text.strip():
        raise UserError(f"--derive {spec!r}: expected NAME=EXPR")
    expr = _Expr(spec, text, df.columns).parse()
    try:
        return df.with_columns(expr.alias(name.strip()))
    except pl.exceptions.PolarsError:
        raise UserError(f"--derive {spec!r}: {path} has non-numeric values in the columns it uses") from None


# -----------------------------------------------------------------------------
# loading and running


def _load(args: argparse.Namespace) -> tuple[pl.DataFrame, list[str]]:
    """The rows to fit (x columns then y, Float64, no nulls) and the x column names."""
    path = args.csv
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        df = pl.read_csv(path, infer_schema_length=None)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise UserError(f"{path}: cannot read as CSV ({str(e).splitlines()[0]})") from None
    for spec in args.derive:
        df = _derive(df, spec, path)

    k = scaling.FORMS[args.form].k
    x_cols = [c.strip() for c in args.x.split(",")]
    if len(x_cols) != k:
        raise UserError(
            f"--form {args.form} takes {k} --x column(s) ({INPUT_HINT[args.form]}), got {args.x!r}"
        )
    for c in [*x_cols, args.y]:
        if c not in df.columns:
            raise UserError(f"{path}: no column {c!r}; columns: {', '.join(df.columns)}")
        try:
            df = df.with_columns(pl.col(c).cast(pl.Float64, strict=True))
        except pl.exceptions.PolarsError:
            raise UserError(f"{path}: column {c!r} has non-numeric values") from None

    rows = df.select([*x_cols, args.y]).drop_nulls().drop_nans()
    if args.drop_highest >= len(rows):
        raise UserError(f"--drop-highest {args.drop_highest}: {path} has only {len(rows)} usable rows")
    return rows.sort(args.y, descending=True).slice(args.drop_highest), x_cols


def run(args: argparse.Namespace) -> int:
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
        out = {"csv": str(args.csv), "x": x_cols, "y": args.y, "dropped_highest": args.drop_highest}
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
