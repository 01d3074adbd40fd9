"""Public reference data shipped inside the package (see analysis/data/README.md for sources)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
CHINCHILLA_EPOCH_CSV = DATA_DIR / "chinchilla_epoch_replication.csv"
DATABLATIONS_CSV = DATA_DIR / "datablations_c4_points.csv"
