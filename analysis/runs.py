"""Run tables: a runs directory read into Polars frames, never raising on a bad run.

    runs       one row per run directory: run_id, path, state, usable, reason, notes, step, total_steps,
               the flattened config (`objective.target`, `data.unique_samples`, `train.seed`, ...), the final
               evaluation's metrics (`zs_acc`, `caption_loss`, ...) and the step-0 floor (`floor/zs_acc`, ...)
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

import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from study.config import from_dict
from study.runstore import RunStore

SECTIONS = ("model", "data", "objective", "masking", "train", "eval")
SEED = "train.seed"
D = "data.unique_samples"
SAMPLES = "train.samples_seen"
PRIMARY = "zs_acc"  # mean zero-shot accuracy over size, colour, shape and location
RUN_FILES = ("config.yaml", "status.json", "eval.jsonl", "metrics.jsonl")
RUN_ID_RE = re.compile(r"[0-9a-f]{12}")
BASE_COLUMNS = {"run_id": pl.String, "path": pl.String, "state": pl.String, "usable": pl.Boolean,
                "reason": pl.String, "notes": pl.String, "step": pl.Int64, "total_steps": pl.Int64}
CURVE_SCHEMA = {"run_id": pl.String, "source": pl.String, "step": pl.Int64, "samples_seen": pl.Int64,
                "metric": pl.String, "value": pl.Float64}
INFERENCE_SCHEMA = {"run_id": pl.String, "sweep": pl.String, "setting": pl.Int64, "inference_flops": pl.Float64,
                    "metric": pl.String, "value": pl.Float64}


@dataclass
class RunSet:
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


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _metrics(record: dict) -> dict[str, float]:
    """Numeric metrics of an eval or metrics record (booleans and bookkeeping left out)."""
    out = {}
    for key, value in record.items():
        v = _numeric(value)
        if v is not None and key not in ("step", "samples_seen", "final"):
            out[key] = v
    return out


def _flat_config(values: dict) -> dict[str, Any]:
    flat = {}
    for section, fields in values.items():
        for key, value in fields.items():
            flat[f"{section}.{key}"] = json.dumps(value) if isinstance(value, list | dict) else value
    return flat


def _read_config(path: Path) -> dict[str, Any]:
    """Flattened, validated config; raises ValueError with a one-line reason."""
    if not path.is_file():
        raise ValueError("no config.yaml")
    try:
        values = yaml.safe_load(path.read_text())
        if not isinstance(values, dict):
            raise ValueError("not a mapping")
        return _flat_config(from_dict(values).to_dict())
    except Exception as e:  # any garbage: the run is listed with the reason, never a crash
        raise ValueError(f"unreadable config.yaml ({e.__class__.__name__}: {str(e).splitlines()[0][:160]})") from None


def _curve_rows(run_id: str, source: str, records: list[dict]) -> list[tuple]:
    """Long rows of records; a repeated step (re-evaluation) keeps its last record."""
    latest: dict[tuple[int, str], tuple] = {}
    for r in records:
        step = r.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        seen = r.get("samples_seen")
        seen = seen if isinstance(seen, int) and not isinstance(seen, bool) else None
        for metric, value in _metrics(r).items():
            latest[(step, metric)] = (run_id, source, step, seen, metric, value)
    return list(latest.values())


def _inference_rows(run_id: str, path: Path, notes: list[str]) -> list[tuple]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        rows = []
        for sweep in ("views", "diffusion_steps"):
            for rec in data.get(sweep, []):
                flops = _numeric(rec.get("inference_flops_per_image"))
                rows += [(run_id, sweep, int(rec[sweep]), flops, m, v) for m, v in _metrics(rec).items()
                         if m not in (sweep, "inference_flops_per_image")]
        return rows
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        notes.append(f"{path.name}: unreadable, left out")
        return []


def _state(status: dict, final: dict | None) -> tuple[str, bool, str]:
    """(state, usable, reason) of a run with a valid config."""
    state = str(status.get("state", "unknown"))
    if state == "completed":
        return (state, True, "") if final is not None else (state, False, "completed but no final evaluation")
    if state == "failed":
        return state, False, f"failed: {status.get('reason', 'no reason recorded')}"
    if state == "unknown":
        return state, False, "status.json missing or unreadable"
    step, total = status.get("step"), status.get("total_steps")
    at = f" at step {step}/{total}" if step is not None and total else ""
    return state, False, f"not finished ({state}{at})"


def _read_run(path: Path) -> tuple[dict, list[tuple], list[tuple]]:
    """(runs row, curve rows, inference rows) of one run directory."""
    run_id, notes = path.name, []
    row: dict[str, Any] = {"run_id": run_id, "path": str(path)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            row |= _read_config(path / "config.yaml")
            config_error = ""
        except ValueError as e:
            config_error = str(e)
        store = RunStore(path)
        status = store.status()
        evals, metrics = store.records("eval.jsonl"), store.records("metrics.jsonl")
    for w in caught:
        notes.append(str(w.message).replace(str(path) + "/", ""))
        warnings.warn(str(w.message), stacklevel=3)

    finals = [r for r in evals if r.get("final") is True]
    final = finals[-1] if finals else None
    if final is None and isinstance(status.get("final"), dict):
        final = status["final"]
        notes.append("final metrics taken from status.json (no final record in eval.jsonl)")
    floor = next((r for r in evals if r.get("step") == 0), None)
    state, usable, reason = _state(status, final)
    if config_error:
        usable, reason = False, config_error
    row |= {"state": state, "usable": usable, "reason": reason,
            "step": status.get("step") if isinstance(status.get("step"), int) else None,
            "total_steps": status.get("total_steps") if isinstance(status.get("total_steps"), int) else None}
    row |= _metrics(final or {})
    row |= {f"floor/{k}": v for k, v in _metrics(floor or {}).items()}
    if usable and not math.isfinite(row.get(PRIMARY, math.nan)):
        row |= {"usable": False, "reason": f"final {PRIMARY} missing or not finite"}
    inference = _inference_rows(run_id, path / "inference_scaling.json", notes)
    row["notes"] = "; ".join(notes)
    if config_error:
        return row, [], []
    return row, _curve_rows(run_id, "eval", evals) + _curve_rows(run_id, "train", metrics), inference


def _is_run_dir(path: Path) -> bool:
    if not path.is_dir() or path.name.startswith("."):
        return False
    return bool(RUN_ID_RE.fullmatch(path.name)) or any((path / f).exists() for f in RUN_FILES)


def _frame(rows: list[dict]) -> pl.DataFrame:
    """The runs frame with base columns first, then config, final metrics and floor metrics."""
    if not rows:
        return pl.DataFrame(schema=BASE_COLUMNS)
    df = pl.DataFrame(rows, infer_schema_length=None)
    config = sorted(config_columns(df), key=lambda c: SECTIONS.index(c.split(".", 1)[0]))
    floor = [c for c in df.columns if c.startswith("floor/")]
    final = [c for c in df.columns if c not in BASE_COLUMNS and c not in config and c not in floor]
    return df.select(*BASE_COLUMNS, *config, *sorted(final), *sorted(floor)).with_columns(
        pl.col(c).cast(t) for c, t in BASE_COLUMNS.items())


def load_runs(runs_dir: Path | str) -> RunSet:
    """Every run directory directly under `runs_dir` (sweeps keep runs flat; `grids/` and hidden folders are
    skipped). A missing `runs_dir` gives empty frames."""
    runs_dir = Path(runs_dir)
    paths = sorted(p for p in runs_dir.iterdir() if _is_run_dir(p)) if runs_dir.is_dir() else []
    rows, curves, inference = [], [], []
    for path in paths:
        row, curve, inf = _read_run(path)
        rows.append(row)
        curves += curve
        inference += inf
    return RunSet(_frame(rows), pl.LazyFrame(curves, schema=CURVE_SCHEMA, orient="row"),
                  pl.DataFrame(inference, schema=INFERENCE_SCHEMA, orient="row"))


def short_names(keys: list[str]) -> dict[str, str]:
    """Dotted config keys to their last part, unless two keys share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def describe_arms(runs: pl.DataFrame, exclude: tuple[str, ...] = (SEED, D)) -> pl.Series:
    """A readable arm label per run, from the config keys that vary among `runs` (seed and D left out):
    e.g. "target=semantic_input, lr=0.001"; "all runs" when nothing varies."""
    keys = [k for k in config_columns(runs) if k not in exclude and runs[k].n_unique() > 1]
    names = short_names(keys)
    labels = [", ".join(f"{names[k]}={format_value(r[k])}" for k in keys) or "all runs"
              for r in runs.select(keys).iter_rows(named=True)] if keys else ["all runs"] * len(runs)
    return pl.Series("arm", labels, dtype=pl.String)
