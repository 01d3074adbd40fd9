"""Analysis: 10,000 synthetic runs x 200 evaluations x 5 metrics on disk. The toolkit loads them, aggregates
seeds (final metrics per arm, learning curves per arm) and writes the tables; a pandas reference does the same
aggregation the usual pandas way (a frame per file, concat, melt, groupby). Both results are checked equal.
The whole report without figures is timed too.

    python -m benchmarks.analysis_speed [RUNS] [EVALS]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import polars as pl
import yaml

from analysis.aggregate import curve_stats, seed_stats
from analysis.grids import read_grids
from analysis.runs import YAML_LOADER, load_runs
from benchmarks.common import write_result
from benchmarks.synthetic_runs import GRID, METRICS, write_runs
from reports.build import build_report

T = TypeVar("T")

T975 = "t975"


def toolkit_tables(runs_dir: Path, out: Path) -> dict[str, pl.DataFrame]:
    """The per-arm final and curve statistics through the toolkit's own analysis, written as CSVs."""
    runs = load_runs(runs_dir)
    (grid,) = read_grids(runs_dir)
    usable = runs.usable.join(grid.members.select("run_id", "arm"), on="run_id")
    finals = pl.concat([seed_stats(usable, m, ["arm"]) for m in METRICS]).drop("seeds")
    curves = pl.concat([curve_stats(runs.curves, usable, m).with_columns(pl.lit(m).alias("metric"))
                        for m in METRICS])
    finals.write_csv(out / "toolkit_finals.csv")
    curves.write_csv(out / "toolkit_curves.csv")
    return {"finals": finals, "curves": curves}


def _t_interval(df: pd.DataFrame) -> pd.DataFrame:
    from scipy import stats

    q = stats.t.ppf(0.975, np.maximum(df["n"] - 1, 1))
    half = np.where(df["n"] > 1, q * df["std"] / np.sqrt(df["n"]), np.nan)
    return df.assign(lo=df["mean"] - half, hi=df["mean"] + half)


def pandas_tables(runs_dir: Path, out: Path) -> dict[str, pd.DataFrame]:
    """The reference: the same tables from the same files, written with pandas."""
    membership = json.loads((runs_dir / "grids" / f"{GRID}__cpu.json").read_text())
    arms = {t["run_id"]: t["axes"]["arm"] for t in membership["trials"]}
    finals, evals = [], []
    for path in sorted(p for p in runs_dir.iterdir() if p.is_dir() and p.name != "grids"):
        config = yaml.load((path / "config.yaml").read_bytes(), Loader=YAML_LOADER)
        status = json.loads((path / "status.json").read_text())
        frame = pd.read_json(path / "eval.jsonl", lines=True)
        if status["state"] != "completed" or not frame["final"].any():
            continue
        frame["run_id"], frame["arm"], frame["seed"] = path.name, arms[path.name], config["train"]["seed"]
        evals.append(frame)
        finals.append(frame[frame["final"]].iloc[[-1]])
    final = pd.concat(finals)
    final_stats = pd.concat([
        final.groupby("arm", sort=True)[m].agg(n="count", mean="mean", std="std").reset_index().assign(metric=m)
        for m in METRICS])
    long = pd.concat(evals).melt(id_vars=["run_id", "arm", "step", "samples_seen"], value_vars=list(METRICS),
                                 var_name="metric", value_name="value")
    curve_stats_ = (long.dropna(subset=["value"]).groupby(["metric", "arm", "samples_seen"], sort=True)["value"]
                    .agg(n="count", mean="mean", std="std").reset_index())
    final_stats, curve_stats_ = _t_interval(final_stats), _t_interval(curve_stats_)
    final_stats.to_csv(out / "pandas_finals.csv", index=False)
    curve_stats_.to_csv(out / "pandas_curves.csv", index=False)
    return {"finals": final_stats, "curves": curve_stats_}


def _same(toolkit: dict[str, pl.DataFrame], reference: dict[str, pd.DataFrame]) -> float:
    """Largest absolute difference between the two implementations' numbers (raises if rows differ)."""
    worst = 0.0
    keys = {"finals": ["metric", "arm"], "curves": ["metric", "arm", "samples_seen"]}
    for name, by in keys.items():
        a = toolkit[name].to_pandas().sort_values(by).reset_index(drop=True)
        b = reference[name].sort_values(by).reset_index(drop=True)
        if len(a) != len(b) or not (a[by].astype(str).values == b[by].astype(str).values).all():
            raise AssertionError(f"{name}: the toolkit and the pandas reference give different groups")
        for col in ("n", "mean", "lo", "hi"):
            worst = max(worst, float(np.nanmax(np.abs(a[col].to_numpy(float) - b[col].to_numpy(float)))))
    return worst


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """What `fn` returns and the seconds it took."""
    t = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t


def main(runs: str = "10000", evals: str = "200") -> dict:
    with tempfile.TemporaryDirectory(prefix="unihetero-analysis-bench-") as tmp:
        root = Path(tmp)
        (runs_dir, setup) = timed(lambda: write_runs(root, int(runs), int(evals)))
        toolkit, toolkit_s = timed(lambda: toolkit_tables(runs_dir, root))
        reference, pandas_s = timed(lambda: pandas_tables(runs_dir, root))
        worst = _same(toolkit, reference)
        _, report_s = timed(lambda: build_report(runs_dir, root / "report", draw_figures=False))
    result = {"runs": int(runs), "evals_per_run": int(evals), "metrics": len(METRICS), "write_s": setup,
              "toolkit_load_aggregate_s": toolkit_s, "pandas_load_aggregate_s": pandas_s,
              "speedup_vs_pandas": pandas_s / toolkit_s, "max_abs_difference": worst,
              "report_without_figures_s": report_s,
              "met": pandas_s / toolkit_s >= 3 and report_s < 20}
    print(f"analysis: {runs} runs x {evals} evals x {len(METRICS)} metrics: load+aggregate toolkit {toolkit_s:.1f} s "
          f"vs pandas {pandas_s:.1f} s ({result['speedup_vs_pandas']:.1f}x; largest difference {worst:.1e}); "
          f"whole report without figures {report_s:.1f} s", file=sys.stderr)
    write_result("analysis", result)
    return result


if __name__ == "__main__":
    main(*sys.argv[1:])
