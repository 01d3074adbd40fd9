"""The repository stands alone: no tracked file outside .ci/ reads the workspace's shared folder, and the
vendored reference data is where the readers look for it."""

import re
import subprocess
from pathlib import Path

import polars as pl

from analysis.reference_data import CHINCHILLA_EPOCH_CSV

REPO = Path(__file__).resolve().parents[1]
SHARED = "sha" + "red"  # spelt in pieces so that this file does not match its own pattern
OUTSIDE = re.compile(r"\.\./" + SHARED + '|"' + SHARED + "/|" + SHARED + "/data")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [REPO / name for name in out.decode().split("\0") if name and not name.startswith(".ci/")]


def test_no_tracked_file_reads_outside_the_repository():
    files = tracked_files()
    assert len(files) > 50  # the listing worked
    offenders = []
    for path in files:
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(REPO)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                      if OUTSIDE.search(line)]
    assert offenders == []


def test_the_pattern_catches_what_it_must():
    assert OUTSIDE.search(f'Path(__file__).parent / "{SHARED}/data/x.csv"')
    assert OUTSIDE.search(f"cat ../{SHARED}/PAPER.md")
    assert not OUTSIDE.search(f"99.5% of their variance is {SHARED} by all tokens")


def test_vendored_chinchilla_data_is_inside_the_package():
    assert REPO in CHINCHILLA_EPOCH_CSV.resolve().parents
    df = pl.read_csv(CHINCHILLA_EPOCH_CSV)
    assert df.height == 245 and {"Model Size", "Training FLOP", "loss"} <= set(df.columns)
    assert (CHINCHILLA_EPOCH_CSV.parent / "README.md").read_text().count("Besiroglu") >= 1
