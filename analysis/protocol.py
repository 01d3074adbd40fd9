"""A study protocol's machine-readable part (`protocol.yaml` beside its PROTOCOL.md), read alike by `report`,
`power` and `sweep launch --until-decided`: the planned comparisons and their families, the metric, the
equivalence margin, the level, the power, the alpha-spending function, the seed waves and the seed cap.

    protocol: 3
    metric: zs_norm                 # primary metric; higher_is_better: true
    alpha: 0.05                     # per family, split evenly over its comparisons (Bonferroni)
    power: 0.8
    margin: 0.02                    # delta: "equivalent within +-delta"
    spending: obrien_fleming        # or pocock
    seeds: {first: 3, wave: 2, cap: 11}   # looks after 3, 5, 7, 9 and 11 pairs at most
    assumed_sd: 0.02                # paired sd in `metric` for `power` without a pilot (optional)
    families: {takeaway_1: "Generating semantics helps understanding; pixels reaching the LLM hurt it"}
    comparisons:
      - {id: b_si_text, family: takeaway_1, grid: v3_targets_contrastive, arm: semantic_input,
         baseline: text_only, claim: superior}
      - {id: ..., metric: rollout_rel/8, higher_is_better: false, margin: 0.1, assumed_sd: 0.08,
         where: {regime: fixed}}

A comparison pairs the runs of its grid's `arm` and `baseline` labels that agree on every other axis (the seed,
the data scale, ...), restricted to the axis values in `where`; `arm` and `baseline` name the `arm` label, or give
several labels as a mapping (`{mask: truncnorm_mar, arm: semantic_input}`). Every error names the file and key
(exit 2). The top-level `assumed_sd` is in the protocol's metric: a comparison of another metric has none unless it
states its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from analysis.sequential import SPENDING, Plan
from study.errors import UserError

CLAIMS = ("superior", "inferior", "none")
TOP = ("protocol", "metric", "higher_is_better", "alpha", "power", "margin", "spending", "seeds", "assumed_sd",
       "families", "comparisons")
COMPARISON_KEYS = ("id", "family", "grid", "arm", "baseline", "claim", "metric", "higher_is_better", "margin",
                   "assumed_sd", "where")


@dataclass(frozen=True)
class Comparison:
    """One pre-registered comparison: arm against baseline within a grid, on one metric, with its margin."""

    id: str
    family: str
    grid: str
    arm: dict[str, str]  # axis labels of the arm's trials
    baseline: dict[str, str]
    claim: str  # the paper's side: superior (arm better than baseline), inferior, or none
    metric: str
    higher_is_better: bool
    margin: float  # delta in the comparison's metric
    where: dict[str, Any] = field(default_factory=dict)
    assumed_sd: float | None = None  # paired sd in the comparison's metric for `power` without a pilot


@dataclass(frozen=True)
class Protocol:
    """A study protocol's machine-readable part: levels, margin, spending, waves, seed cap and comparisons."""

    number: int
    path: Path
    metric: str
    alpha: float
    power: float
    margin: float
    spending: str
    first: int
    wave: int
    cap: int
    families: dict[str, str]
    comparisons: tuple[Comparison, ...]

    def family_size(self, family: str) -> int:
        """How many comparisons the family holds (its multiplicity correction's divisor)."""
        return sum(c.family == family for c in self.comparisons)

    def plan(self, comparison: Comparison) -> Plan:
        """The comparison's sequential plan: its family's alpha over the family's size."""
        return Plan(self.alpha / self.family_size(comparison.family), comparison.margin, self.cap, self.spending,
                    self.power)

    def look_sizes(self) -> list[int]:
        """The pairs at each planned look: first, first + wave, ..., cap."""
        sizes = list(range(self.first, self.cap, self.wave))
        return sizes + [self.cap]

    def for_grid(self, grid: str) -> list[Comparison]:
        """The comparisons decided on the runs of grid `grid`."""
        return [c for c in self.comparisons if c.grid == grid]


def _number(value: Any, where: str, path: Path, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value < hi:
        raise UserError(f"protocol '{path}', key '{where}': expected a number in ({lo}, {hi}), got {value!r}")
    return float(value)


def _count(value: Any, where: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise UserError(f"protocol '{path}', key '{where}': expected an integer >= 2, got {value!r}")
    return value


def load_protocol(path: Path | str) -> Protocol:
    """Read and check a protocol file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"protocol '{path}': cannot read it ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise UserError(f"protocol '{path}': expected a mapping of {', '.join(TOP)}")
    unknown = sorted(set(data) - set(TOP))
    if unknown:
        raise UserError(f"protocol '{path}', key '{unknown[0]}': unknown (allowed: {', '.join(TOP)})")
    for key in ("protocol", "metric", "margin", "seeds", "families", "comparisons"):
        if key not in data:
            raise UserError(f"protocol '{path}': missing key '{key}'")
    spending = data.get("spending", "obrien_fleming")
    if spending not in SPENDING:
        raise UserError(f"protocol '{path}', key 'spending': {spending!r} is not one of {', '.join(SPENDING)}")
    seeds = data["seeds"]
    if not isinstance(seeds, dict) or set(seeds) != {"first", "wave", "cap"}:
        raise UserError(f"protocol '{path}', key 'seeds': expected {{first, wave, cap}}, got {seeds!r}")
    first, cap = _count(seeds["first"], "seeds.first", path), _count(seeds["cap"], "seeds.cap", path)
    wave = seeds["wave"]
    if isinstance(wave, bool) or not isinstance(wave, int) or wave < 1 or first > cap:
        raise UserError(f"protocol '{path}', key 'seeds': wave must be an integer >= 1 and first <= cap")
    families = data["families"]
    if not isinstance(families, dict) or not families:
        raise UserError(f"protocol '{path}', key 'families': expected a mapping of family names to descriptions")
    metric = str(data["metric"])
    higher = bool(data.get("higher_is_better", True))
    margin = _number(data["margin"], "margin", path, 0, float("inf"))
    top_sd = None if data.get("assumed_sd") is None else _number(data["assumed_sd"], "assumed_sd", path, 0,
                                                                    float("inf"))
    comparisons, ids = [], set()
    if not isinstance(data["comparisons"], list) or not data["comparisons"]:
        raise UserError(f"protocol '{path}', key 'comparisons': expected a list of comparisons")
    for i, c in enumerate(data["comparisons"]):
        where = f"comparisons[{i}]"
        if not isinstance(c, dict):
            raise UserError(f"protocol '{path}', key '{where}': expected a mapping")
        bad = sorted(set(c) - set(COMPARISON_KEYS))
        missing = [k for k in ("id", "family", "grid", "arm", "baseline") if k not in c]
        if bad or missing:
            key = bad[0] if bad else missing[0]
            raise UserError(f"protocol '{path}', key '{where}.{key}': {'unknown' if bad else 'missing'} (keys: "
                            f"{', '.join(COMPARISON_KEYS)})")
        if c["family"] not in families:
            raise UserError(f"protocol '{path}', key '{where}.family': {c['family']!r} is not one of the families "
                            f"({', '.join(families)})")
        claim = c.get("claim", "none")
        if claim not in CLAIMS or str(c["id"]) in ids:
            raise UserError(f"protocol '{path}', key '{where}': claim must be one of {', '.join(CLAIMS)} and ids "
                            "unique")
        ids.add(str(c["id"]))
        labels = {}
        for side in ("arm", "baseline"):
            value = c[side] if isinstance(c[side], dict) else {"arm": c[side]}
            labels[side] = {str(k): str(v) for k, v in value.items()}
        if set(labels["arm"]) != set(labels["baseline"]):
            raise UserError(f"protocol '{path}', key '{where}': arm and baseline name different labels")
        own_metric = str(c.get("metric", metric))
        sd = _number(c["assumed_sd"], f"{where}.assumed_sd", path, 0, float("inf")) if "assumed_sd" in c else \
            top_sd if own_metric == metric else None
        comparisons.append(Comparison(str(c["id"]), str(c["family"]), str(c["grid"]), labels["arm"],
                                      labels["baseline"], claim, own_metric, bool(c.get("higher_is_better", higher)),
                                      _number(c.get("margin", margin), f"{where}.margin", path, 0, float("inf")),
                                      dict(c.get("where", {})), sd))
    return Protocol(int(data["protocol"]), path, metric, _number(data.get("alpha", 0.05), "alpha", path, 0, 1),
                    _number(data.get("power", 0.8), "power", path, 0, 1), margin, spending, first, wave, cap,
                    {str(k): str(v) for k, v in families.items()}, tuple(comparisons))


def membership(runs_dir: Path, grid: str) -> list[dict]:
    """The trials (run_id, axes) of every membership file of `grid` in `runs_dir`."""
    out = []
    for path in sorted((Path(runs_dir) / "grids").glob(f"{grid}__*.json")):
        body = json.loads(path.read_text())
        out += [t for t in body["trials"] if not t.get("stage")]
    return out


def pairs(trials: list[dict], comparison: Comparison) -> list[tuple[str, str, dict]]:
    """(arm run id, baseline run id, the axes they share) of every pair of the comparison: trials of the arm's and the
    baseline's labels that agree on every axis those labels do not determine, within `where`."""
    labels = list(comparison.arm)

    def group(t: dict) -> tuple:
        return tuple(str(t["axes"].get(k)) for k in labels)

    def matches(t: dict, want: dict) -> bool:
        return group(t) == tuple(want[k] for k in labels) and all(
            str(t["axes"].get(k)) == str(v) for k, v in comparison.where.items())

    values: dict[str, set] = {}
    for t in trials:
        for k, v in t["axes"].items():
            values.setdefault(k, set()).add((group(t), json.dumps(v)))
    # a key the labels determine (one value per group: an arm's own settings) is not a pairing key
    determined = {k for k, seen in values.items() if len({g for g, _ in seen}) == len(seen)}

    def shared(t: dict) -> str:
        return json.dumps({k: v for k, v in t["axes"].items() if k not in determined and k not in labels},
                          sort_keys=True)

    index = {shared(t): t for t in trials if matches(t, comparison.baseline)}
    out = []
    for t in trials:
        match = index.get(shared(t)) if matches(t, comparison.arm) else None
        if match is not None:
            out.append((t["run_id"], match["run_id"], json.loads(shared(t))))
    return out
