"""The search options the search tests start from: a tiny arm, one log-scale parameter, evaluations every 5 steps."""

from __future__ import annotations

from pathlib import Path

from sweeps.search import Param, SearchOptions

ARM = ("train.samples_seen=160", "eval.num_images=4", "eval.probe_images=20", "eval.inference_scaling=false")


def options(tmp_path: Path, **fields: object) -> SearchOptions:
    """SearchOptions for a study in TMP_PATH/runs, with `fields` replaced."""
    values = {"source": "tiny", "overrides": ARM, "params": (Param("train.lr", 1e-4, 1e-2, log=True),),
              "eval_every": 5, "trials": 3, "runs_dir": tmp_path / "runs", "study_name": "s"} | fields
    return SearchOptions(**values)
