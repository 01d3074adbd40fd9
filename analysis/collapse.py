"""Arms whose visual input collapsed, marked in their label so that every table and figure shows it.

A run is collapsed when its final evaluation's diagnostics say so (`study.evaluation.diagnostics.is_collapsed`:
the rule is stated there and in `COLLAPSE_RULE`); an arm with any collapsed run gets the label suffix
` [collapsed k/n]` (k of its n usable runs). Runs without diagnostics (the v1 study's) are never marked.
"""

from __future__ import annotations

from dataclasses import replace

import polars as pl

from analysis.grids import Grid
from study.evaluation.diagnostics import COLLAPSE_RULE, is_collapsed

DIAGNOSTICS = ("diag/image_share", "diag/global_share")


def collapsed_counts(grid: Grid, usable: pl.DataFrame) -> dict[str, tuple[int, int]]:
    """Per arm with diagnostics: (collapsed runs, usable runs)."""
    if not set(DIAGNOSTICS) <= set(usable.columns):
        return {}
    rows = usable.select("run_id", *DIAGNOSTICS).join(grid.members, on="run_id", how="inner")
    counts: dict[str, tuple[int, int]] = {}
    for r in rows.iter_rows(named=True):
        verdict = is_collapsed(r) if all(r[k] is not None for k in DIAGNOSTICS) else None
        if verdict is None:
            continue
        k, n = counts.get(r["arm"], (0, 0))
        counts[r["arm"]] = (k + int(verdict), n + 1)
    return counts


def mark_collapsed(grid: Grid, usable: pl.DataFrame) -> tuple[Grid, list[str]]:
    """The grid with collapsed arms' labels marked, and a sentence for its section (none when nothing
    collapsed)."""
    marks = {arm: f"{arm} [collapsed {k}/{n}]" for arm, (k, n) in collapsed_counts(grid, usable).items() if k}
    if not marks:
        return grid, []
    members = grid.members.with_columns(pl.col("arm").replace(marks))
    return replace(grid, members=members), [f"Arms marked [collapsed k/n] had k of n runs {COLLAPSE_RULE}."]
