"""`unihetero power`: the seeds each planned comparison of a protocol needs, and the power of a design.

For each comparison of the protocol: the paired standard deviation (from a pilot's runs of the same arms, or the
`assumed_sd` in the comparison's metric: its own, or the protocol's for a comparison of the protocol's metric), the
seeds per arm for 80% (the protocol's) power to detect a difference of the margin at
the comparison's level (the family's alpha over its size), the seeds for TOST to declare equivalence within the
margin when there is no difference, and the power of a design of `--seeds` (default: the protocol's cap) for both.
With several `--pilot` directories (a study's own runs first, then an earlier study's), a comparison takes the first
with at least two pairs, in its own grid there before the grid `--like` names.
Fixed-sample numbers: the sequential plan's early looks spend a little of the level, so they are slight
underestimates for it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from study.errors import UserError
from unihetero.commands.argtypes import positive_float, positive_int

if TYPE_CHECKING:
    from analysis.protocol import Comparison


def register(sub: argparse._SubParsersAction) -> None:
    """The `power` command's arguments."""
    p = sub.add_parser("power", help="seeds per arm each planned comparison needs; the power of a design",
                       description=__doc__.splitlines()[0])
    p.add_argument("--protocol", required=True, help="a protocol.yaml (see analysis/protocol.py)")
    p.add_argument("--pilot", metavar="RUNS_DIR", action="append", default=[],
                   help="runs whose paired differences give each comparison's sd (repeatable: the first that has "
                        "pairs of a comparison gives its sd)")
    p.add_argument("--like", action="append", default=[], metavar="GRID=PILOT_GRID",
                   help="where a pilot has no pairs in GRID, read them from its PILOT_GRID (same arm labels; "
                        "repeatable)")
    p.add_argument("--effect", type=positive_float, help="the difference to detect (default: each comparison's margin)")
    p.add_argument("--seeds", type=positive_int, help="the design's seeds per arm (default: the protocol's cap)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=run_power)


def pilot_sd(runs_dir: Path, grid: str, comparison: Comparison, metric_values: dict[str, float]) -> tuple[float, int]:
    """(paired sd, pairs) of the comparison's arms in the pilot's `grid`."""
    from analysis.power import paired_sd
    from analysis.protocol import membership, pairs

    found = [(metric_values.get(a), metric_values.get(b)) for a, b, _ in pairs(membership(runs_dir, grid), comparison)]
    diffs = [a - b for a, b in found if a is not None and b is not None and math.isfinite(a - b)]
    return paired_sd(diffs), len(diffs)


def pilot_values(runs_dir: Path, metrics: set[str]) -> dict[str, dict[str, float]]:
    """Each of `metrics` the pilot's usable runs have, by run id."""
    from analysis.runs import load_runs

    runs = load_runs(runs_dir).usable
    return {m: dict(zip(runs["run_id"].to_list(), runs[m].to_list(), strict=True)) for m in metrics
            if m in runs.columns}


def first_pilot_sd(pilots: dict[Path, dict[str, dict[str, float]]], grids: list[str],
                   comparison: Comparison) -> tuple[float, str] | None:
    """(paired sd, where from) of the first pilot, and there the first of `grids`, with at least two pairs."""
    for runs_dir, values in pilots.items():
        for grid in grids:
            if comparison.metric in values:
                sd, k = pilot_sd(runs_dir, grid, comparison, values[comparison.metric])
                if k >= 2:
                    return sd, f"pilot {grid}" + (f" in {runs_dir}" if len(pilots) > 1 else "") + f", {k} pairs"
    return None


def rows(args: argparse.Namespace) -> list[dict]:
    """One row per planned comparison: its standard deviation, seeds needed and the power of the design."""
    from analysis.power import difference_power, equivalence_power, seeds_needed
    from analysis.protocol import load_protocol

    protocol = load_protocol(args.protocol)
    like = {}
    for item in args.like:
        grid, sep, pilot = item.partition("=")
        if not sep or not grid or not pilot:
            raise UserError(f"power --like '{item}': expected GRID=PILOT_GRID")
        like[grid] = pilot
    for runs_dir in args.pilot:
        if not Path(runs_dir).is_dir():
            raise UserError(f"power --pilot '{runs_dir}': no such runs directory")
    metrics = {c.metric for c in protocol.comparisons}
    pilots = {Path(d): pilot_values(Path(d), metrics) for d in args.pilot}
    n = args.seeds or protocol.cap
    out = []
    for c in protocol.comparisons:
        plan = protocol.plan(c)
        alpha, effect = plan.alpha, args.effect or plan.margin
        found = first_pilot_sd(pilots, list(dict.fromkeys([c.grid, like.get(c.grid, c.grid)])), c)
        sd, source = found or (c.assumed_sd, "assumed")
        if sd is None or not math.isfinite(sd):
            raise UserError(f"power: no standard deviation for comparison '{c.id}' in {c.metric} (give --pilot with "
                            f"its arms, or its own assumed_sd: the protocol's is in {protocol.metric})")
        out.append({"comparison": c.id, "family": c.family, "alpha": alpha, "sd": sd, "sd_from": source,
                    "effect": effect, "seeds_difference": seeds_needed(effect, sd, alpha, protocol.power),
                    "seeds_equivalence": seeds_needed(0.0, sd, alpha, protocol.power, margin=plan.margin),
                    "design_seeds": n, "power_difference": difference_power(n, effect, sd, alpha),
                    "margin": plan.margin,
                    "power_equivalence": equivalence_power(n, 0.0, plan.margin, sd, alpha)})
    return out


def run_power(args: argparse.Namespace) -> int:
    """`unihetero power --protocol P`: print the power table (or its JSON)."""
    table = rows(args)
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    print(f"| comparison | alpha | paired sd (from) | difference to detect | seeds: difference | seeds: equivalent "
          f"within the margin | power at {table[0]['design_seeds']} seeds: difference, equivalence |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['comparison']} | {r['alpha']:.4f} | {r['sd']:.4f} ({r['sd_from']}) | {r['effect']:g} | "
              f"{r['seeds_difference'] or '> 10,000'} | {r['seeds_equivalence'] or '> 10,000'} | "
              f"{r['power_difference']:.2f}, {r['power_equivalence']:.2f} |")
    return 0
