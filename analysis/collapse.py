"""Arms whose visual input collapsed, marked in their label so that every table and figure shows it.

A run is collapsed when its final evaluation's diagnostics say so (`study.evaluation.diagnostics.is_collapsed`:
the rule is stated there and in `COLLAPSE_RULE`); an arm with any collapsed run gets the label suffix
` [collapsed k/n]` (k of its n usable runs). Collapse is looked for over the whole run too: a run whose largest
`diag/image_share` at any evaluation after step 0 (`diag/image_share_max`) reached the rule's threshold, though its
final evaluation did not, passed through a collapse it recovered from, and its arm gets ` [collapsed mid-run m/n]`.
Runs without diagnostics (the v1 study's) are never marked.
"""

from __future__ import annotations

from dataclasses import replace

import polars as pl

from analysis.grids import Grid
from analysis.runs import IMAGE_SHARE_MAX
from study.evaluation.diagnostics import COLLAPSE_RULE, IMAGE_SHARE_COLLAPSED, is_collapsed

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


def recovered_counts(grid: Grid, usable: pl.DataFrame) -> dict[str, tuple[int, int]]:
    """Per arm with a whole-run maximum: (runs that reached the image-share threshold at some evaluation but not at
    the final one, usable runs)."""
    if IMAGE_SHARE_MAX not in usable.columns or not set(DIAGNOSTICS) <= set(usable.columns):
        return {}
    rows = usable.select("run_id", IMAGE_SHARE_MAX, *DIAGNOSTICS).join(grid.members, on="run_id", how="inner")
    counts: dict[str, tuple[int, int]] = {}
    for r in rows.iter_rows(named=True):
        if r[IMAGE_SHARE_MAX] is None or any(r[k] is None for k in DIAGNOSTICS):
            continue
        k, n = counts.get(r["arm"], (0, 0))
        mid_run = r[IMAGE_SHARE_MAX] >= IMAGE_SHARE_COLLAPSED and not is_collapsed(r)
        counts[r["arm"]] = (k + int(mid_run), n + 1)
    return counts


def mark_collapsed(grid: Grid, usable: pl.DataFrame) -> tuple[Grid, list[str]]:
    """The grid with collapsed arms' labels marked, and a sentence for its section (none when nothing
    collapsed)."""
    final, mid_run = collapsed_counts(grid, usable), recovered_counts(grid, usable)
    marks = {}
    for arm in set(final) | set(mid_run):
        label = arm + (f" [collapsed {final[arm][0]}/{final[arm][1]}]" if final.get(arm, (0, 0))[0] else "")
        label += f" [collapsed mid-run {mid_run[arm][0]}/{mid_run[arm][1]}]" if mid_run.get(arm, (0, 0))[0] else ""
        if label != arm:
            marks[arm] = label
    if not marks:
        return grid, []
    members = grid.members.with_columns(pl.col("arm").replace(marks))
    text = [f"Arms marked [collapsed k/n] had k of n runs {COLLAPSE_RULE}."]
    if any(mid_run.get(arm, (0, 0))[0] for arm in marks):
        text.append(f"Arms marked [collapsed mid-run m/n] had m of n runs whose diag/image_share reached "
                    f"{IMAGE_SHARE_COLLAPSED} at some evaluation after step 0 and recovered by the last.")
    return replace(grid, members=members), text
