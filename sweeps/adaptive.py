"""`sweep launch GRID --until-decided PROTOCOL`: seeds in waves until the protocol's comparisons of the grid are
decided or reach the seed cap.

The grid's own seeds are the first wave. After a wave has trained, every comparison still open is tested against
its pre-registered sequential boundary (`analysis.sequential`, `analysis.protocol`): a look. A decided comparison
stops; for each open one the next wave adds `seeds.wave` new seeds (continuing the grid's numbering) to its arm's
and its baseline's trials (within its `where`), until the cap. Every look is appended to
`RUNS_DIR/looks/<grid>__<preset>.jsonl` with the pairs, statistics, boundaries and decisions of each comparison and
the seeds it added; a relaunch reads them and goes on from the last one, so the procedure is resumable and its
history is part of the records. `waves` stops a launch after that many looks (the next wave recorded, not trained):
a study of several grids can then train one wave of each in turn, so every grid reaches its next look before any
grid its last.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

from analysis.protocol import Comparison, Protocol, membership, pairs
from analysis.sequential import Decision, decide
from study.errors import UserError
from study.files import atomic_write
from study.runstore import read_jsonl
from sweeps.launch import launch_trials
from sweeps.spec import Axis, GridSpec, Trial, pipeline
from sweeps.status import TrialState, format_table

LOOKS = "looks"
FINISHED = ("completed", "failed")


def looks_file(runs_dir: Path, spec: GridSpec) -> Path:
    """Where the grid's looks are recorded: one JSON line per look, with its decision on each comparison."""
    return Path(runs_dir) / LOOKS / f"{spec.name}__{spec.scale}.jsonl"


def with_seeds(spec: GridSpec, seeds: list[int]) -> GridSpec:
    """The grid with its seed axis replaced by `seeds`."""
    axes = [a for a in spec.axes if a.keys != ("train.seed",)]
    return dataclasses.replace(spec, axes=[*axes, Axis(("train.seed",), tuple((s,) for s in seeds), ("seeds",))])


def first_seeds(spec: GridSpec) -> list[int]:
    """The grid's own seeds list: the first wave of an --until-decided launch."""
    (axis,) = [a for a in spec.axes if a.keys == ("train.seed",)] or [None]
    if axis is None:
        raise UserError(f"grid '{spec.name}': --until-decided needs a seeds list (the first wave)")
    return [row[0] for row in axis.rows]


def selects(trial: Trial, comparison: Comparison, side: str) -> bool:
    """Whether `trial` is one of the comparison's arm (side 'arm') or baseline trials."""
    labels = comparison.arm if side == "arm" else comparison.baseline
    wanted = {**labels, **{k: str(v) for k, v in comparison.where.items()}}
    return all(str(trial.axes.get(k)) == v for k, v in wanted.items())


def chosen(trials: list[Trial], first: list[int], extensions: list[dict],
           comparisons: dict[str, Comparison]) -> list[Trial]:
    """The trials to run: every trial of the first seeds, and those an extension added; with the stage trials they
    need, in pipeline order."""
    own = [t for t in trials if not t.stage]
    keep = {t.run_id for t in own if t.axes.get("seed") in first}
    for ext in extensions:
        for cid in ext["comparisons"]:
            c = comparisons[cid]
            keep |= {t.run_id for t in own if t.axes.get("seed") in ext["seeds"]
                     and (selects(t, c, "arm") or selects(t, c, "baseline"))}
    needed = {up for t in own if t.run_id in keep for up in t.upstream}
    return [t for t in trials if t.run_id in keep or (t.stage and t.run_id in needed)]


def paired_values(runs_dir: Path, grid: str, comparison: Comparison) -> list[float]:
    """The comparison's paired differences (arm minus baseline) over its usable pairs, in seed order."""
    from analysis.runs import load_runs

    frame = load_runs(runs_dir).usable
    if comparison.metric not in frame.columns:
        return []
    values = dict(zip(frame["run_id"].to_list(), frame[comparison.metric].to_list(), strict=True))
    found = sorted(pairs(membership(runs_dir, grid), comparison), key=lambda p: p[2].get("seed", 0))
    return [values[a] - values[b] for a, b, _ in found
            if values.get(a) is not None and values.get(b) is not None]


def decision_record(c: Comparison, d: Decision, sizes: list[int]) -> dict:
    """One look's decision on one comparison, as its line in the looks file."""
    return {"n": d.n, "sizes": sizes, "mean": d.mean, "sd": d.sd, "t": d.t_difference, "t_bound": d.difference_bound,
            "equivalence_interval": list(d.equivalence_interval), "margin": c.margin, "verdict": d.verdict,
            "seeds_to_decide": d.seeds_to_decide}


def grid_comparisons(spec: GridSpec, protocol: Protocol) -> dict[str, Comparison]:
    """The protocol's comparisons of this grid by id (an error when it plans none)."""
    comparisons = {c.id: c for c in protocol.for_grid(spec.name)}
    if not comparisons:
        raise UserError(f"protocol '{protocol.path}' plans no comparison of grid '{spec.name}'")
    return comparisons


def planned_trials(spec: GridSpec, runs_dir: Path, protocol: Protocol) -> list[Trial]:
    """The trials `--until-decided` has run or will run now: the first wave and every wave its looks added."""
    extensions = [look["extend"] for look in read_jsonl(looks_file(runs_dir, spec)) if look.get("extend")]
    return _waves(spec, first_seeds(spec), extensions, grid_comparisons(spec, protocol))


def trials_to_cap(spec: GridSpec, runs_dir: Path, protocol: Protocol) -> list[Trial]:
    """The trials `--until-decided` runs at most from here: the planned ones, and the waves that follow while every
    comparison still open stays open (those the last look extended, or all before a look), each comparison's waves
    ending where the launch ends them, when one more would pass the seed cap."""
    looks = read_jsonl(looks_file(runs_dir, spec))
    extensions = [look["extend"] for look in looks if look.get("extend")]
    first = first_seeds(spec)
    comparisons = grid_comparisons(spec, protocol)
    if looks and looks[-1].get("extend") is None:
        future = []
    else:
        last = looks[-1] if looks else None
        pairs_next = ({cid: last["comparisons"][cid]["n"] + protocol.wave for cid in last["extend"]["comparisons"]}
                      if last else {cid: len(first) for cid in comparisons})
        more = {cid: (protocol.cap - n) // protocol.wave for cid, n in pairs_next.items()}
        top = _seeds(first, extensions)[-1]
        future = [{"comparisons": [cid for cid, k in more.items() if k >= w],
                   "seeds": list(range(top + 1 + (w - 1) * protocol.wave, top + 1 + w * protocol.wave))}
                  for w in range(1, max(more.values(), default=0) + 1)]
    return _waves(spec, first, extensions + future, comparisons)


def _seeds(first: list[int], extensions: list[dict]) -> list[int]:
    """Every seed the first wave or an extension names, in order (a next wave's seeds follow the last)."""
    return sorted(set(first + [s for ext in extensions for s in ext["seeds"]]))


def _waves(spec: GridSpec, first: list[int], extensions: list[dict], comparisons: dict[str, Comparison]) -> list[Trial]:
    """The trials of the first seeds and of each extension's, out of the grid with every seed they name."""
    return chosen(pipeline(with_seeds(spec, _seeds(first, extensions))), first, extensions, comparisons)


def looks_lines(runs_dir: Path, spec: GridSpec) -> list[str]:
    """One line per recorded look: when, each comparison's verdict and pairs, the wave it added."""
    lines = []
    for look in read_jsonl(looks_file(runs_dir, spec)):
        verdicts = ", ".join(f"{cid} {rec['verdict']} (n={rec['n']})" for cid, rec in look["comparisons"].items())
        ext = look.get("extend")
        added = f"seeds {ext['seeds']} for {', '.join(ext['comparisons'])}" if ext else "none: the procedure ended"
        lines.append(f"look {look['look']} ({look['at']}): {verdicts}; next wave: {added}")
    return lines


def decisions_table(runs_dir: Path, spec: GridSpec) -> str:
    """Each comparison at its latest recorded look: its pairs, mean difference (arm minus baseline), seed standard
    error, difference t against the look's boundary, TOST interval against the margin, verdict, and the pairs a
    fixed-sample design would need at the observed difference and variance ('' before the first look)."""
    latest = {cid: (look["look"], rec) for look in read_jsonl(looks_file(runs_dir, spec))
              for cid, rec in look["comparisons"].items()}
    rows = []
    for cid, (k, rec) in latest.items():
        n, (lo, hi) = rec["n"], rec["equivalence_interval"]
        se = rec["sd"] / math.sqrt(n) if n > 1 else math.nan
        rows.append([cid, str(k), str(n), f"{rec['mean']:+.4f}", f"{se:.4f}",
                     f"{rec['t']:+.2f} vs {rec['t_bound']:.2f}",
                     f"[{lo:+.3f}, {hi:+.3f}] vs +-{rec['margin']:g}", rec["verdict"],
                     "-" if rec["seeds_to_decide"] is None else str(rec["seeds_to_decide"])])
    header = ["comparison", "look", "pairs", "difference", "seed s.e.", "t vs boundary", "TOST interval", "verdict",
              "seeds to decide"]
    return format_table(rows, header) if rows else ""


def launch_until_decided(spec: GridSpec, runs_dir: Path, protocol: Protocol, backend_name: str, options: object,
                         max_seeds: int | None = None, retry_failed: bool = False,
                         waves: int | None = None) -> list[TrialState]:
    """Run the grid's first wave, then look and add seeds to open comparisons, wave after wave, or for at most
    `waves` looks in this launch (see the module)."""
    comparisons = grid_comparisons(spec, protocol)
    cap = min(protocol.cap, max_seeds or protocol.cap)
    first = first_seeds(spec)
    path = looks_file(runs_dir, spec)
    looks = read_jsonl(path)
    extensions = [look["extend"] for look in looks if look.get("extend")]
    looked = 0
    while True:
        trials = _waves(spec, first, extensions, comparisons)
        states = launch_trials(spec, trials, runs_dir, backend_name, options, retry_failed)
        if looks and looks[-1]["extend"] is None:
            return states  # the procedure ended at its last look
        if any(s.state not in FINISHED for s in states):
            return states  # a wave that did not finish: no look (relaunch to go on); a failed run leaves no pair
        decided = {cid: rec for look in looks for cid, rec in look["comparisons"].items()
                   if rec["verdict"] in ("superior", "inferior", "equivalent", "inconclusive")}
        sizes = {cid: [rec["n"] for look in looks for k, rec in look["comparisons"].items() if k == cid]
                 for cid in comparisons}
        record = {"look": len(looks) + 1, "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "comparisons": {}, "extend": None}
        open_ids = []
        for cid, c in comparisons.items():
            if cid in decided:
                continue
            diffs = paired_values(runs_dir, spec.name, c)
            look_sizes = [*sizes[cid], len(diffs)]
            d = decide(diffs, look_sizes, protocol.plan(c), c.higher_is_better)
            if d.n >= cap and not d.decided:
                d = dataclasses.replace(d, verdict="inconclusive")
            record["comparisons"][cid] = decision_record(c, d, look_sizes)
            if not d.decided and d.verdict != "inconclusive":
                open_ids.append(cid)
        top = _seeds(first, extensions)[-1]
        new = list(range(top + 1, top + 1 + protocol.wave))
        growing = [cid for cid in open_ids if record["comparisons"][cid]["n"] + len(new) <= cap]
        for cid in set(open_ids) - set(growing):  # no room for another wave: open at the cap
            record["comparisons"][cid]["verdict"] = "inconclusive"
        if growing:
            record["extend"] = {"comparisons": growing, "seeds": new}
        looks.append(record)  # the file replaced whole: a launch killed while writing leaves the earlier looks
        atomic_write(path, "".join(json.dumps(look) + "\n" for look in looks).encode())
        looked += 1
        summary = ", ".join(f"{cid}: {r['verdict']} (n={r['n']})" for cid, r in record["comparisons"].items())
        print(f"look {record['look']} of {spec.name}: {summary}", file=sys.stderr)
        if record["extend"] is None or looked == waves:
            return states
        extensions.append(record["extend"])
