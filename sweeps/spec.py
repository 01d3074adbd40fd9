"""Grid specs: a YAML file of base config, axes, zipped groups, seeds and scale presets, expanded into trials.

    name: generation_target            # [A-Za-z0-9_-], names the grid's membership file
    description: ...
    protocol: 1                                                # which study's `reproduce all` runs it (0: none)
    base: {preset: cpu-small, overrides: {eval.every: 250}}
    axes: {objective.target: [none, semantic_input]}          # cartesian product
    zip:                                                       # each group: keys that move together
      - {regime: [a, b], data.unique_samples: [100, 1000], train.samples_seen: [100, 1000]}
    seeds: [0, 1]                                              # the train.seed axis, innermost
    presets:                                                   # smoke | cpu | gpu | full
      smoke: {base: {preset: tiny}, axes: {...}, zip: [...], seeds: [0]}

A pipeline names upstream grids as stages and takes runs of theirs as inputs (see `pipeline`):

    stages: {encoder_pretrain: encoder_pretrain}               # stage name: grid name or spec path
    base: {preset: cpu-small, overrides: {model.encoder_checkpoint: {stage: encoder_pretrain, arm: contrastive}}}

A reference `{stage: NAME, LABEL: VALUE, ...}` (as any config value: base, axis or zip) selects the one trial
of that stage, at the same scale preset, whose axis labels match, and becomes `run:<its run id>`: the upstream
run's id is part of the dependent's config, so of its run id. A label value `{cycle: [V0, V1, ...]}` takes the
values in turn by the dependent's seed (seed s takes V[s mod len]): the seeds of a grid spread over several
upstream instances, e.g. `{stage: encoder_pretrain, arm: contrastive, seed: {cycle: [0, 1, 2]}}` trains seed 4 on
the encoder of seed 1.

A scale preset replaces the base preset, merges its overrides over the base ones, replaces or adds
axes by key, and replaces the zip groups and seeds when it names them. A zip-group key without a dot
(`arm`, `regime`) is a label for the trial table only. Every error is a `UserError` naming the spec
file, line and key.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from study.config import PRESET_DIR, RunConfig, from_dict, merge, presets, read_yaml
from study.errors import UserError
from study.upstream import run_reference, upstream_ids

GRID_DIR = Path(__file__).parent / "grids"
SCALES = ("smoke", "demo", "cpu", "gpu", "full")  # demo: `make demo`, minutes on 2 cores (optional)
TOP_KEYS = ("name", "description", "protocol", "stages", "base", "axes", "zip", "seeds", "presets")
PRESET_KEYS = ("base", "axes", "zip", "seeds")
BASE_KEYS = ("preset", "overrides")
PROTOCOLS = (0, 1, 2, 3)  # 0: outside a study; 1: the v1 cpu study; 2: the paper's regime; 3: the study that decides
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
Where = tuple[str | int, ...]


@dataclass(frozen=True)
class Axis:
    """One or more config keys that take their values together (a plain axis has one key)."""

    keys: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    where: Where  # the spec key path, for error messages


@dataclass
class GridSpec:
    """A parsed grid YAML: its base config, axes, upstream stages and protocol."""

    name: str
    description: str
    path: Path
    scale: str
    base_preset: str
    base: dict  # the preset's values with the spec's overrides merged in
    axes: list[Axis] = field(default_factory=list)
    stages: dict[str, list[Trial]] = field(default_factory=dict)  # each stage's trials (its own pipeline)
    protocol: int = 1  # the study protocol the grid belongs to (PROTOCOLS); 0: calibrations and pilots outside a
    # study, run by name, never by `reproduce all`


@dataclass(frozen=True)
class Trial:
    """One run of a grid: its axis labels and resolved config."""

    index: int
    axes: dict[str, Any]
    config: RunConfig
    stage: str = ""  # the upstream stage this trial belongs to ('' = the grid's own trials)

    @property
    def run_id(self) -> str:
        return self.config.run_id()

    @property
    def upstream(self) -> list[str]:
        """Run ids of the runs this trial takes as inputs."""
        return upstream_ids(self.config)


def grid_path(source: str) -> Path:
    """A grid name in sweeps/grids or a path to a YAML file."""
    named = GRID_DIR / f"{source}.yaml"
    if NAME_RE.fullmatch(source) and named.is_file():
        return named
    path = Path(source)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    known = ", ".join(sorted(p.stem for p in GRID_DIR.glob("*.yaml")))
    raise UserError(f"grid '{source}' is neither a grid name ({known}) nor a YAML file")


class _Marks:
    """Line numbers of keys in a YAML document, from its node tree."""

    def __init__(self, text: str):
        try:
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            self.root = None

    def line(self, where: Where) -> int | None:
        node, line = self.root, None
        for key in where:
            if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            elif isinstance(node, yaml.MappingNode):
                match = next(((k, v) for k, v in node.value if k.value == key), None)
                if match is None:
                    break
                line, node = match[0].start_mark.line + 1, match[1]
            else:
                break
        return line


class _Reader:
    """Checks the parts of one spec file; every error names the file, line and key."""

    def __init__(self, path: Path):
        self.path = path
        self.data = read_yaml(path)
        self.marks = _Marks(path.read_text())

    def error(self, where: Where, message: str) -> UserError:
        line = self.marks.line(where)
        at = f" line {line}" if line else ""
        key = f", key '{'.'.join(map(str, where))}'" if where else ""
        return UserError(f"grid spec '{self.path}'{at}{key}: {message}")

    def mapping(self, value: Any, where: Where, allowed: tuple[str, ...] | None) -> dict:
        if not isinstance(value, dict):
            raise self.error(where, f"expected a mapping, got {value!r}")
        for key in value:
            if allowed is not None and key not in allowed:
                raise self.error(where + (str(key),), f"unknown key (allowed: {', '.join(allowed)})")
        return value

    def values(self, value: Any, where: Where) -> tuple:
        if not isinstance(value, list):
            raise self.error(where, f"expected a list of values, got {value!r}")
        if not value:
            raise self.error(where, "empty axis (give at least one value)")
        return tuple(value)

    def base(self, value: Any, where: Where) -> tuple[str | None, dict]:
        base = self.mapping(value, where, BASE_KEYS)
        preset = base.get("preset")
        if preset is not None and preset not in presets():
            allowed = ", ".join(presets())
            raise self.error(where + ("preset",), f"unknown preset {preset!r} (allowed: {allowed})")
        overrides = self.mapping(base.get("overrides", {}), where + ("overrides",), None)
        nested: dict = {}
        for key, val in overrides.items():
            nested = merge(nested, _nested(str(key).split("."), val))
        return preset, nested

    def axes(self, value: Any, where: Where) -> dict[str, Axis]:
        axes = self.mapping(value, where, None)
        out = {}
        for key, vals in axes.items():
            key = str(key)
            if _is_label(key):
                raise self.error(where + (key,), "an axis key is a config key (section.key); labels "
                                                 "without a dot belong in zip groups")
            out[key] = Axis((key,), tuple((v,) for v in self.values(vals, where + (key,))), where + (key,))
        return out

    def zips(self, value: Any, where: Where) -> list[Axis]:
        if not isinstance(value, list):
            raise self.error(where, f"expected a list of zip groups, got {value!r}")
        groups = []
        for i, group in enumerate(value):
            group = self.mapping(group, where + (i,), None)
            if not group:
                raise self.error(where + (i,), "empty zip group")
            columns = {str(k): self.values(v, where + (i, str(k))) for k, v in group.items()}
            lengths = {k: len(v) for k, v in columns.items()}
            if len(set(lengths.values())) > 1:
                raise self.error(where + (i,), "zip group lists of unequal length "
                                 f"({', '.join(f'{k}: {n}' for k, n in lengths.items())})")
            groups.append(Axis(tuple(columns), tuple(zip(*columns.values(), strict=True)), where + (i,)))
        return groups

    def seeds(self, value: Any, where: Where) -> Axis:
        seeds = self.values(value, where)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise self.error(where, f"seeds must be integers >= 0, got {list(seeds)!r}")
        if len(set(seeds)) != len(seeds):
            raise self.error(where, f"repeated seed in {list(seeds)!r}")
        return Axis(("train.seed",), tuple((s,) for s in seeds), where)


def _is_label(key: str) -> bool:
    return "." not in key


def _nested(parts: list[str], value: Any) -> dict:
    return {parts[0]: _nested(parts[1:], value)} if len(parts) > 1 else {parts[0]: value}


def _stage_path(source: Any, spec_path: Path, r: _Reader, where: Where) -> str:
    """A stage's grid: a grid name, or a spec path relative to the spec that names it."""
    if not isinstance(source, str):
        raise r.error(where, f"expected a grid name or spec path, got {source!r}")
    relative = spec_path.parent / source
    return str(relative) if not NAME_RE.fullmatch(source) and relative.is_file() else source


def load_spec(source: str, scale: str, _loading: tuple[Path, ...] = ()) -> GridSpec:
    """Read and check a grid spec, with the scale preset `scale` applied (its stages at the same scale)."""
    path = grid_path(source)
    if path.resolve() in _loading:
        raise UserError(f"grid spec '{path}': its stages lead back to itself")
    r = _Reader(path)
    data = r.mapping(r.data, (), TOP_KEYS)
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise r.error(("name",), f"{name!r} is not a grid name ([A-Za-z0-9_-], at most 64 characters)")
    if "base" not in data:
        raise r.error((), "missing key 'base' (the preset and overrides every trial starts from)")
    base_where: Where = ("base",)
    base_preset, overrides = r.base(data["base"], base_where)
    axes = r.axes(data.get("axes", {}), ("axes",))
    zips = r.zips(data.get("zip", []), ("zip",))
    seeds = r.seeds(data["seeds"], ("seeds",)) if "seeds" in data else None
    scales = r.mapping(data.get("presets", {}), ("presets",), SCALES)
    if scale not in scales:
        raise UserError(f"grid spec '{path}': no preset '{scale}' (available: {', '.join(scales) or 'none'})")
    top = ("presets", scale)
    preset = r.mapping(scales[scale] or {}, top, PRESET_KEYS)
    if "base" in preset:
        base_where = top + ("base",)
        p_preset, p_overrides = r.base(preset["base"], base_where)
        base_preset, overrides = p_preset or base_preset, merge(overrides, p_overrides)
    if base_preset is None:
        raise r.error(base_where, "missing key 'preset'")
    axes.update(r.axes(preset.get("axes", {}), top + ("axes",)))
    if "zip" in preset:
        zips = r.zips(preset["zip"], top + ("zip",))
    if "seeds" in preset:
        seeds = r.seeds(preset["seeds"], top + ("seeds",))
    all_axes = list(axes.values()) + zips + ([seeds] if seeds else [])
    seen: dict[str, Axis] = {}
    for axis in all_axes:
        for key in axis.keys:
            if key in seen:
                raise r.error(axis.where, f"key '{key}' is set by two axes")
            seen[key] = axis
    base = merge(read_yaml(PRESET_DIR / f"{base_preset}.yaml"), overrides)
    stages = {}
    for stage, stage_source in r.mapping(data.get("stages", {}), ("stages",), None).items():
        where = ("stages", str(stage))
        if not NAME_RE.fullmatch(str(stage)):
            raise r.error(where, "a stage name is [A-Za-z0-9_-]")
        upstream = load_spec(_stage_path(stage_source, path, r, where), scale, _loading + (path.resolve(),))
        stages[str(stage)] = pipeline(upstream)
    protocol = data.get("protocol", 1)
    if protocol not in PROTOCOLS:
        raise r.error(("protocol",), f"{protocol!r} is not 0 (no study), 1, 2 or 3")
    spec = GridSpec(name, str(data.get("description", "")), path, scale, base_preset, base, all_axes, stages,
                    protocol)
    _check_values(spec, r, base_where)
    return spec


def _assignments(axis: Axis, row: tuple) -> tuple[dict, dict]:
    """(config overrides, axis labels) of one row of an axis."""
    labels = dict(zip(axis.keys, row, strict=True))
    values: dict = {}
    for key, value in labels.items():
        if not _is_label(key):
            values = merge(values, _nested(key.split("."), value))
    if axis.keys == ("train.seed",):
        labels = {"seed": row[0]}
    return values, labels


def _resolve(spec: GridSpec, values: dict) -> RunConfig:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in merge(spec.base, values).items()}
    seed = merged.get("train", {}).get("seed", 0)
    for section in merged.values():
        if isinstance(section, dict):
            for key, value in section.items():
                if isinstance(value, dict) and "stage" in value:
                    section[key] = run_reference(stage_trial(spec, _cycled(value, seed)).run_id)
    return from_dict(merged)


def _cycled(ref: dict, seed: Any) -> dict:
    """A stage reference with each `{cycle: [...]}` label value replaced by the value for `seed`."""
    out = {}
    for label, value in ref.items():
        if isinstance(value, dict) and set(value) == {"cycle"}:
            values = value["cycle"]
            if not isinstance(values, list) or not values or not isinstance(seed, int):
                raise UserError(f"stage reference {ref!r}: 'cycle' needs a non-empty list and an integer seed")
            value = values[seed % len(values)]
        out[label] = value
    return out


def stage_trial(spec: GridSpec, ref: dict) -> Trial:
    """The one trial of stage `ref['stage']` whose axis labels match the reference's other keys."""
    name = ref["stage"]
    if name not in spec.stages:
        raise UserError(f"stage reference {ref!r}: unknown stage {name!r} (stages: {', '.join(spec.stages) or 'none'})")
    labels = {k: v for k, v in ref.items() if k != "stage"}
    own = [t for t in spec.stages[name] if not t.stage]
    matches = [t for t in own if all(str(t.axes.get(k)) == str(v) for k, v in labels.items())]
    if len(matches) != 1:
        choices = "; ".join(_describe(t.axes) for t in own)
        raise UserError(f"stage reference {ref!r} matches {len(matches)} trials of stage {name!r}, not one "
                        f"(its trials: {choices})")
    return matches[0]


def _check_values(spec: GridSpec, r: _Reader, base_where: Where) -> None:
    """Resolve the base config and each axis value alone, so a bad key or value names its spec line."""
    try:
        _resolve(spec, {})
    except UserError as e:
        raise r.error(base_where, str(e)) from None
    for axis in spec.axes:
        for row in axis.rows:
            try:
                _resolve(spec, _assignments(axis, row)[0])
            except UserError as e:
                raise r.error(axis.where, str(e)) from None


def expand(spec: GridSpec) -> list[Trial]:
    """All trials of the grid, in a fixed order (axes in spec order, seeds innermost)."""
    trials: list[Trial] = []
    first_of: dict[str, int] = {}
    for index, rows in enumerate(itertools.product(*(a.rows for a in spec.axes))):
        values: dict = {}
        labels: dict = {}
        for axis, row in zip(spec.axes, rows, strict=True):
            v, lab = _assignments(axis, row)
            values, labels = merge(values, v), labels | lab
        try:
            cfg = _resolve(spec, values)
        except UserError as e:
            raise UserError(f"grid spec '{spec.path}', trial {index} ({_describe(labels)}): {e}") from None
        trial = Trial(index, labels, cfg)
        if trial.run_id in first_of:
            raise UserError(f"grid spec '{spec.path}': trials {first_of[trial.run_id]} and {index} "
                            f"({_describe(labels)}) resolve to the same config (run id {trial.run_id})")
        first_of[trial.run_id] = index
        trials.append(trial)
    return trials


def _describe(labels: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in labels.items())


def pipeline(spec: GridSpec) -> list[Trial]:
    """The grid's trials after every upstream trial they need (transitively, each once, in stage order), indexed
    in that order; upstream trials carry their stage's name."""
    own = expand(spec)
    by_id = {t.run_id: replace(t, stage=t.stage or name) for name, trials in spec.stages.items() for t in trials}
    needed: list[str] = []

    def need(run_id: str) -> None:
        if run_id in needed or run_id not in by_id:
            return
        for up in by_id[run_id].upstream:
            need(up)
        needed.append(run_id)

    for t in own:
        for up in t.upstream:
            need(up)
    ordered = [by_id[i] for i in needed] + own
    return [replace(t, index=i) for i, t in enumerate(ordered)]


def waves(trials: list[Trial]) -> list[list[Trial]]:
    """Trials grouped so that every trial's upstream runs (among `trials`) lie in earlier groups."""
    depth: dict[str, int] = {}
    for t in trials:  # pipeline order: upstream first
        depth[t.run_id] = 1 + max((depth[u] for u in t.upstream if u in depth), default=-1)
    return [[t for t in trials if depth[t.run_id] == d] for d in range(max(depth.values(), default=-1) + 1)]
