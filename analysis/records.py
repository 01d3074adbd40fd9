"""JSONL run records (eval.jsonl, metrics.jsonl) of many runs read into one Polars frame.

The files of all runs are joined and parsed by Polars in one multithreaded pass. A group of files that
does not parse cleanly (a corrupt or truncated line, a record whose step is not an integer) is split in
halves until the offending file is alone; that file is read line by line as before: each bad line is
skipped with a warning naming the file and line, which also goes into the run's notes.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from study.runstore import read_jsonl

RUN = "run_id"
KEYS = ("step", "samples_seen", "final")
KEY_TYPES = {"step": pl.Int64, "samples_seen": pl.Int64, "final": pl.Boolean}


class _Unclean(Exception):
    """A group of files that the one-pass parse cannot take as it is."""


def is_number(value: object) -> bool:
    """An int or float that is not a bool (JSON's true/false would pass isinstance int)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _typed(frame: pl.DataFrame) -> pl.DataFrame:
    """Keys with their types (absent ones null) and every numeric field as Float64; other fields dropped."""
    numeric = [c for c, t in frame.schema.items() if c not in KEYS and c != RUN and t.is_numeric()]
    keys = [pl.col(k).cast(t) if k in frame.columns else pl.lit(None, dtype=t).alias(k) for k, t in KEY_TYPES.items()]
    return frame.select(RUN, *keys, *(pl.col(c).cast(pl.Float64) for c in numeric))


def _parse(ids: Sequence[str], blobs: Sequence[bytes]) -> pl.DataFrame:
    """One pass over complete, clean files; raises _Unclean when they are not."""
    lines = [b.count(b"\n") for b in blobs]
    if any(not b.endswith(b"\n") for b in blobs):
        raise _Unclean
    try:
        frame = pl.read_ndjson(io.BytesIO(b"".join(blobs)), infer_schema_length=None)
    except Exception as e:  # Polars raises ComputeError / SchemaError variants on bad input
        raise _Unclean from e
    if frame.height != sum(lines):  # blank lines: counted in `lines` but not parsed
        raise _Unclean
    for key, dtype in KEY_TYPES.items():
        if key in frame.columns and frame.schema[key] not in (dtype, pl.Null):
            raise _Unclean
    run = pl.Series(RUN, ids, dtype=pl.String).gather([i for i, n in enumerate(lines) for _ in range(n)])
    return _typed(frame.with_columns(run))


def _line_by_line(run_id: str, path: Path, notes: dict[str, list[str]]) -> pl.DataFrame:
    """One file the slow way: each corrupt line skipped with a warning and a note."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = read_jsonl(path)
    for w in caught:
        notes.setdefault(run_id, []).append(str(w.message).replace(str(path.parent) + "/", ""))
        warnings.warn(str(w.message), stacklevel=4)
    rows = []
    for r in records:
        row = {RUN: run_id, "step": r.get("step") if _integer(r.get("step")) else None,
               "samples_seen": r.get("samples_seen") if _integer(r.get("samples_seen")) else None,
               "final": r.get("final") is True}
        rows.append(row | {k: float(v) for k, v in r.items() if k not in KEYS and is_number(v)})
    if not rows:
        return pl.DataFrame(schema={RUN: pl.String, **KEY_TYPES})
    return _typed(pl.DataFrame(rows, infer_schema_length=None))


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read(ids: list[str], paths: list[Path], blobs: list[bytes], notes: dict[str, list[str]]) -> list[pl.DataFrame]:
    try:
        return [_parse(ids, blobs)]
    except _Unclean:
        if len(ids) == 1:
            return [_line_by_line(ids[0], paths[0], notes)]
    half = len(ids) // 2
    return (_read(ids[:half], paths[:half], blobs[:half], notes)
            + _read(ids[half:], paths[half:], blobs[half:], notes))


def read_records(files: dict[str, Path], notes: dict[str, list[str]]) -> pl.DataFrame:
    """Records of one JSONL file per run ({run_id: path}; missing files have none), in file order: columns
    run_id, step, samples_seen, final and one Float64 column per numeric field."""
    present = [(run_id, path) for run_id, path in files.items() if path.is_file()]
    blobs = [path.read_bytes() for _, path in present]
    kept = [i for i, b in enumerate(blobs) if b]
    ids, paths = [present[i][0] for i in kept], [present[i][1] for i in kept]
    frames = _read(ids, paths, [blobs[i] for i in kept], notes) if kept else []
    empty = pl.DataFrame(schema={RUN: pl.String, **KEY_TYPES})
    return pl.concat([empty, *frames], how="diagonal_relaxed")


def long_curves(records: pl.DataFrame, source: str) -> pl.LazyFrame:
    """One row per run x step x metric; a repeated step (a re-evaluation) keeps its last record. Most runs
    repeat no step, so the (costly) de-duplication runs only over the runs that do."""
    metrics = [c for c in records.columns if c not in KEYS and c != RUN]
    stepped = records.filter(pl.col("step").is_not_null())
    repeats = stepped.filter(pl.struct(RUN, "step").is_duplicated())[RUN].unique()
    long = (stepped.lazy()
            .unpivot(metrics, index=[RUN, "step", "samples_seen"], variable_name="metric", value_name="value")
            .filter(pl.col("value").is_not_null()))
    if len(repeats):
        repeated = pl.col(RUN).is_in(repeats.implode())
        long = pl.concat([long.filter(~repeated), long.filter(repeated).unique(
            subset=[RUN, "step", "metric"], keep="last", maintain_order=True)])
    return long.select(RUN, pl.lit(source).alias("source"), "step", "samples_seen", "metric", "value")


def per_run(records: pl.DataFrame, which: pl.Expr, last: bool) -> pl.DataFrame:
    """Each run's last (or first) record where `which` holds: run_id and its non-null metrics."""
    chosen = records.filter(which).group_by(RUN, maintain_order=True)
    return (chosen.last() if last else chosen.first()).drop(*KEYS)
