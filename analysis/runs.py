"""Run tables: a runs directory read into Polars frames, never raising on a bad run.

    runs       one row per run directory: run_id, path, state, usable, reason, notes, step, total_steps,
               trained_as (the run whose training it is: its own id, or for a copy of a run that trains alike
               the representative's, `sweeps.dedupe`), the flattened config (`objective.target`,
               `data.unique_samples`, `train.seed`, ...), the final evaluation's metrics (`zs_acc`,
               `caption_loss`, ...) and the step-0 floor (`floor/zs_acc`, ...)
    curves     (lazy) one row per run x step x metric: run_id, source (eval | train), step, samples_seen,
               metric, value
    inference  one row per run x inference setting x metric (inference_scaling.json): run_id, sweep
               (views | diffusion_steps), setting, inference_flops, metric, value

A run is *usable* (enters statistics) when its config is valid, its status is `completed` and it has a
final evaluation. Anything else (missing or garbage config or status, a failed, running or interrupted
run, no final evaluation) stays a row with `usable = false` and the reason. A corrupt JSONL line is
skipped with a warning, which is also kept in the run's `notes`.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from analysis.records import KEYS, is_number, long_curves, per_run, read_records
from study.config import RunConfig, from_dict
from study.runstore import RunStore

SECTIONS = ("model", "data", "objective", "masking", "train", "eval")
SEED = "train.seed"
D = "data.unique_samples"
SAMPLES = "train.samples_seen"
PRIMARY = "zs_acc"  # mean zero-shot accuracy over size, colour, shape and location
NORMALISED = "zs_norm"  # protocol 2's primary: chance-normalised accuracy (as study.evaluation.zero_shot names it)
RUN_FILES = ("config.yaml", "status.json", "eval.jsonl", "metrics.jsonl")
PARALLEL_CONFIGS = 1000  # runs from which configs are read by several processes
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where PyYAML has it
RUN_ID_RE = re.compile(r"[0-9a-f]{12}")
BASE_COLUMNS = {"run_id": pl.String, "path": pl.String, "state": pl.String, "usable": pl.Boolean,
                "reason": pl.String, "notes": pl.String, "step": pl.Int64, "total_steps": pl.Int64,
                "trained_as": pl.String}
CURVE_SCHEMA = {"run_id": pl.String, "source": pl.String, "step": pl.Int64, "samples_seen": pl.Int64,
                "metric": pl.String, "value": pl.Float64}
INFERENCE_SCHEMA = {"run_id": pl.String, "sweep": pl.String, "setting": pl.Int64, "inference_flops": pl.Float64,
                    "metric": pl.String, "value": pl.Float64}


@dataclass
class RunSet:
    """Every run of a runs directory: one row per run, the learning curves and the inference-scaling rows."""

    runs: pl.DataFrame
    curves: pl.LazyFrame
    inference: pl.DataFrame

    @property
    def usable(self) -> pl.DataFrame:
        return self.runs.filter(pl.col("usable"))

    @property
    def problems(self) -> pl.DataFrame:
        """Runs left out of statistics, and usable runs with notes (e.g. skipped corrupt lines)."""
        return self.runs.filter(~pl.col("usable") | (pl.col("notes") != "")).select(
            "run_id", "state", "usable", "reason", "notes", "step", "total_steps")


def config_columns(df: pl.DataFrame) -> list[str]:
    """The flattened config columns of a runs frame, in frame order."""
    return [c for c in df.columns if c.split(".", 1)[0] in SECTIONS and "." in c]


def _outside_identity() -> frozenset[str]:
    defaults = RunConfig()
    return frozenset(f"{section.name}.{f.name}" for section in dataclasses.fields(defaults)
                     for f in dataclasses.fields(getattr(defaults, section.name))
                     if not f.metadata.get("identity", True))


OUTSIDE_IDENTITY = _outside_identity()  # config keys that are not part of a run's id (`opt(identity=False)`)


def identity_columns(df: pl.DataFrame) -> list[str]:
    """The config columns that make a run what it is: those outside its id (parallel layout, checkpoint
    format, trackers, the rollout cache) left out, so runs recorded before such a key existed or changed its
    default still pair with newer ones."""
    return [c for c in config_columns(df) if c not in OUTSIDE_IDENTITY]


def _metrics(record: dict) -> dict[str, float]:
    """Numeric metrics of a record (booleans and bookkeeping left out)."""
    return {k: float(v) for k, v in record.items() if is_number(v) and k not in KEYS}


def _flat_config(cfg: RunConfig) -> dict[str, Any]:
    flat = {}
    for section in dataclasses.fields(cfg):
        values = getattr(cfg, section.name)
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            flat[f"{section.name}.{f.name}"] = json.dumps(value) if isinstance(value, list | dict) else value
    return flat


def _read_config(path: Path) -> dict[str, Any] | str:
    """Flattened, validated config, or a one-line reason why there is none."""
    if not path.is_file():
        return "no config.yaml"
    try:
        values = yaml.load(path.read_bytes(), Loader=YAML_LOADER)
        if not isinstance(values, dict):
            raise ValueError("not a mapping")
        return _flat_config(from_dict(values))
    except Exception as e:  # any garbage: the run is listed with the reason, never a crash
        return f"unreadable config.yaml ({e.__class__.__name__}: {str(e).splitlines()[0][:160]})"


def _read_config_chunk(paths: list[Path]) -> list[dict[str, Any] | str]:
    return [_read_config(p / "config.yaml") for p in paths]


def _read_configs(paths: list[Path]) -> list[dict[str, Any] | str]:
    """Every run's config; parsing and validating YAML is the slow part of loading many runs, so large sets
    are split over forked processes (before this process starts any Polars threads)."""
    workers = min(os.cpu_count() or 1, 8)
    if len(paths) < PARALLEL_CONFIGS or workers < 2:
        return _read_config_chunk(paths)
    chunks = [paths[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        parts = list(pool.map(_read_config_chunk, chunks))
    out: list[dict[str, Any] | str] = [""] * len(paths)
    for i, part in enumerate(parts):
        out[i::workers] = part
    return out


def _inference_rows(run_id: str, path: Path, notes: list[str]) -> list[tuple]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        rows = []
        for sweep in ("views", "diffusion_steps"):
            for rec in data.get(sweep, []):
                flops = rec.get("inference_flops_per_image")
                flops = float(flops) if is_number(flops) else None
                rows += [(run_id, sweep, int(rec[sweep]), flops, m, v) for m, v in _metrics(rec).items()
                         if m not in (sweep, "inference_flops_per_image")]
        return rows
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        notes.append(f"{path.name}: unreadable, left out")
        return []


def _state(status: dict, has_final: bool) -> tuple[str, bool, str]:
    """(state, usable, reason) of a run with a valid config."""
    state = str(status.get("state", "unknown"))
    if state == "completed":
        return (state, True, "") if has_final else (state, False, "completed but no final evaluation")
    if state == "failed":
        return state, False, f"failed: {status.get('reason', 'no reason recorded')}"
    if state == "unknown":
        return state, False, "status.json missing or unreadable"
    step, total = status.get("step"), status.get("total_steps")
    at = f" at step {step}/{total}" if step is not None and total else ""
    return state, False, f"not finished ({state}{at})"


def _run_row(path: Path, config: dict[str, Any] | str, notes: list[str], finals: set[str],
             status_finals: list[dict]) -> tuple[dict, bool]:
    """The runs row of one directory (config, state, reason; metrics are joined later) and whether its
    config is valid. A run whose eval.jsonl has no final record but whose status.json has final metrics
    adds them to `status_finals`."""
    run_id = path.name
    row: dict[str, Any] = {"run_id": run_id, "path": str(path)}
    config_error = config if isinstance(config, str) else ""
    row |= config if isinstance(config, dict) else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = RunStore(path).status()
    for w in caught:
        notes.append(str(w.message).replace(str(path) + "/", ""))
        warnings.warn(str(w.message), stacklevel=3)
    has_final = run_id in finals
    if not has_final and isinstance(status.get("final"), dict):
        status_finals.append({"run_id": run_id, **_metrics(status["final"])})
        notes.append("final metrics taken from status.json (no final record in eval.jsonl)")
        has_final = True
    state, usable, reason = _state(status, has_final)
    if config_error:
        usable, reason = False, config_error
    row |= {"state": state, "usable": usable, "reason": reason,
            "step": status.get("step") if isinstance(status.get("step"), int) else None,
            "total_steps": status.get("total_steps") if isinstance(status.get("total_steps"), int) else None,
            "trained_as": status["same_as"] if isinstance(status.get("same_as"), str) else run_id}
    return row, not config_error


def _is_run_dir(path: Path) -> bool:
    if not path.is_dir() or path.name.startswith("."):
        return False
    return bool(RUN_ID_RE.fullmatch(path.name)) or any((path / f).exists() for f in RUN_FILES)


def _non_null(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(c for c in df.columns if c == "run_id" or df[c].null_count() < df.height)


def _frame(rows: list[dict], finals: pl.DataFrame, floors: pl.DataFrame) -> pl.DataFrame:
    """The runs frame with base columns first, then config, final metrics and floor metrics."""
    if not rows:
        return pl.DataFrame(schema=BASE_COLUMNS)
    df = pl.DataFrame(rows, infer_schema_length=None)
    config = sorted(config_columns(df), key=lambda c: SECTIONS.index(c.split(".", 1)[0]))
    floors = floors.rename({c: f"floor/{c}" for c in floors.columns if c != "run_id"})
    df = df.join(finals, on="run_id", how="left").join(floors, on="run_id", how="left")
    final = sorted(c for c in finals.columns if c != "run_id")
    floor = sorted(c for c in floors.columns if c != "run_id")
    df = df.select(*BASE_COLUMNS, *config, *final, *floor).with_columns(
        pl.col(c).cast(t) for c, t in BASE_COLUMNS.items())
    if PRIMARY not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.Float64).alias(PRIMARY))
    bad = pl.col("usable") & ~pl.col(PRIMARY).is_finite().fill_null(False)
    stage = pl.col(TASK) != "vlm" if TASK in df.columns else pl.lit(False)
    why = pl.when(stage).then(pl.lit(STAGE_REASON)).otherwise(pl.lit(f"final {PRIMARY} missing or not finite"))
    return df.with_columns(pl.when(bad).then(False).otherwise(pl.col("usable")).alias("usable"),
                           pl.when(bad).then(why).otherwise(pl.col("reason")).alias("reason"))


def whole_run(evals: pl.DataFrame) -> pl.DataFrame:
    """Per run, what its last evaluation does not show: the largest `diag/image_share` of any evaluation after step
    0 and the step it came at (a collapse the run recovered from is still seen)."""
    if "diag/image_share" not in evals.columns or evals.is_empty():
        return pl.DataFrame(schema={"run_id": pl.String})
    later = evals.filter((pl.col("step") > 0) & pl.col("diag/image_share").is_finite())
    top = later.sort("diag/image_share", descending=True).group_by("run_id", maintain_order=True).first()
    return top.select("run_id", pl.col("diag/image_share").alias(f"{IMAGE_SHARE_MAX}"),
                      pl.col("step").cast(pl.Float64).alias(f"{IMAGE_SHARE_MAX}_step"))


def with_derived(df: pl.DataFrame) -> pl.DataFrame:
    """Final metrics in units arms with different targets share: each rollout error over its copy-last and
    mean-target baselines' (`rollout_rel/k`, `rollout_rel_mean/k`), and the attribute probes on the rollout averaged
    over the attributes (`rollout_probe`, with `rollout_probe_true`, `rollout_probe_copy_last` and its chance)."""
    derived = []
    for c in df.columns:
        k = c.removeprefix("rollout_err/")
        if c.startswith("rollout_err/") and k.isdigit():
            for name, base in (("rollout_rel", "rollout_err_copy_last"),
                               ("rollout_rel_mean", "rollout_err_mean_target")):
                if f"{base}/{k}" in df.columns:
                    derived.append((pl.col(c) / pl.col(f"{base}/{k}")).alias(f"{name}/{k}"))
    for name, part in [(n, f"{n}/{{}}") for n in ("rollout_probe", "rollout_probe_true", "rollout_probe_copy_last")] \
            + [("chance/rollout_probe", "chance/rollout_probe_{}")]:
        parts = [part.format(a) for a in ROLLOUT_ATTRIBUTES if part.format(a) in df.columns]
        if parts:
            derived.append(pl.mean_horizontal(parts).alias(name))
    return df.with_columns(derived) if derived else df


IMAGE_SHARE_MAX = "diag/image_share_max"
ROLLOUT_ATTRIBUTES = ("shape", "colour", "size")
TASK = "objective.task"
STAGE_REASON = "encoder-pretraining stage: no VLM metrics (its probes are in its eval.jsonl, step 0 = random init)"


def load_runs(runs_dir: Path | str) -> RunSet:
    """Every run directory directly under `runs_dir` (sweeps keep runs flat; `grids/` and hidden folders are
    skipped). A missing `runs_dir` gives empty frames."""
    runs_dir = Path(runs_dir)
    paths = sorted(p for p in runs_dir.iterdir() if _is_run_dir(p)) if runs_dir.is_dir() else []
    notes: dict[str, list[str]] = {p.name: [] for p in paths}
    configs = _read_configs(paths)
    evals = read_records({p.name: p / "eval.jsonl" for p in paths}, notes)
    metrics = read_records({p.name: p / "metrics.jsonl" for p in paths}, notes)
    finals = per_run(evals, pl.col("final"), last=True)
    rows, valid, status_finals, inference = [], [], [], []
    have_final = set(finals["run_id"].to_list())
    for path, config in zip(paths, configs, strict=True):
        row, ok = _run_row(path, config, notes[path.name], have_final, status_finals)
        inference += _inference_rows(path.name, path / "inference_scaling.json", notes[path.name]) if ok else []
        row["notes"] = "; ".join(notes[path.name])
        rows.append(row)
        valid += [path.name] if ok else []
    finals = _non_null(pl.concat([finals, pl.DataFrame(status_finals)], how="diagonal_relaxed")
                       if status_finals else finals)
    finals = with_derived(finals).join(whole_run(evals), on="run_id", how="left")
    floors = _non_null(per_run(evals, pl.col("step") == 0, last=False))
    curves = pl.concat([long_curves(evals, "eval"), long_curves(metrics, "train")])
    return RunSet(_frame(rows, finals, floors), curves.filter(pl.col("run_id").is_in(valid)),
                  pl.DataFrame(inference, schema=INFERENCE_SCHEMA, orient="row"))


def short_names(keys: list[str]) -> dict[str, str]:
    """Dotted config keys to their last part, unless two keys share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def format_value(value: Any) -> str:
    """An axis value as tables show it (floats in their shortest form)."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def seed_keys(runs: pl.DataFrame, keys: list[str]) -> list[str]:
    """The keys among `keys` that belong to the seed, not to an arm: a function of the seed over `runs` while a seed
    ran several combinations of the other keys (e.g. the encoder instance that a grid cycles by seed)."""
    if SEED not in runs.columns or len(keys) < 2:  # one varying key: no other key for a seed to run several of
        return []
    out = []
    for k in keys:
        others = [o for o in keys if o != k]
        per_seed = runs.group_by(SEED).agg(pl.col(k).n_unique().alias("values"),
                                            pl.struct(others).n_unique().alias("arms"))
        if (per_seed["values"] == 1).all() and (per_seed["arms"] > 1).any():
            out.append(k)
    return out


def describe_arms(runs: pl.DataFrame, exclude: tuple[str, ...] = (SEED, D)) -> pl.Series:
    """A readable arm label per run, from the config keys that vary among `runs` (seed, D and the keys that belong to
    the seed left out): e.g. "target=semantic_input, lr=0.001"; "all runs" when nothing varies."""
    keys = [k for k in identity_columns(runs) if k not in exclude and runs[k].n_unique() > 1]
    seeds_own = seed_keys(runs, keys)
    keys = [k for k in keys if k not in seeds_own]
    names = short_names(keys)
    labels = [", ".join(f"{names[k]}={format_value(r[k])}" for k in keys) or "all runs"
              for r in runs.select(keys).iter_rows(named=True)] if keys else ["all runs"] * len(runs)
    return pl.Series("arm", labels, dtype=pl.String)
