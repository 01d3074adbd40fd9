"""argparse value types with bounds: a bad value is argparse's one-line usage error (exit 2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def bounded(kind: type, low: float, strict: bool = False) -> Callable[[str], float | int]:
    """Parse `kind` (int or float) that is >= low (> low when strict)."""
    relation = ">" if strict else ">="

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__} {relation} {low}, got {text!r}") from None
        if not (value > low if strict else value >= low):
            raise argparse.ArgumentTypeError(f"expected {kind.__name__} {relation} {low}, got {text!r}")
        return value

    return parse


positive_int = bounded(int, 1)
nonnegative_int = bounded(int, 0)
nonnegative_float = bounded(float, 0.0)
positive_float = bounded(float, 0.0, strict=True)
