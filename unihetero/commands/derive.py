"""`--derive NAME=EXPR` of `unihetero fit`: a tiny arithmetic parser over column names, numbers, + - * / and
parentheses, turned into a polars expression; nothing is evaluated as Python."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NoReturn

import polars as pl

from study.errors import UserError

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


def derive(df: pl.DataFrame, spec: str, path: Path) -> pl.DataFrame:
    """`df` with the column `spec` (NAME=EXPR) defines; a UserError names what is wrong."""
    name, eq, text = spec.partition("=")
    if not eq or not name.strip() or not text.strip():
        raise UserError(f"--derive {spec!r}: expected NAME=EXPR")
    expr = _Expr(spec, text, df.columns).parse()
    try:
        return df.with_columns(expr.alias(name.strip()))
    except pl.exceptions.PolarsError:
        raise UserError(f"--derive {spec!r}: {path} has non-numeric values in the columns it uses") from None
