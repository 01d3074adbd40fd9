"""Commit the records of a study's completed runs, never partial ones: the run directories whose status is completed
(or failed, with its reason) and whose files changed since the last commit, with the grid membership files and the
sequential looks (`looks/`). Checkpoints and locks are ignored by git.

    python scripts/commit_runs.py RUNS_DIR [--label TEXT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
FINISHED = ("completed", "failed")


def changed(paths: list[Path]) -> list[Path]:
    """The paths with changes git has not committed (new files included)."""
    if not paths:
        return []
    out = subprocess.run(["git", "status", "--porcelain", "--", *map(str, paths)], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    dirty = set()
    for line in out.splitlines():
        dirty.add(Path(line[3:].strip().strip('"')))
    return [p for p in paths if any(d == p.relative_to(ROOT) or p.relative_to(ROOT) in d.parents for d in dirty)]


def finished_runs(runs_dir: Path) -> list[Path]:
    """The run directories under `runs_dir` whose status is finished (completed or failed)."""
    out = []
    for status in sorted(runs_dir.glob("*/status.json")):
        try:
            state = json.loads(status.read_text()).get("state")
        except (OSError, ValueError):
            continue
        if state in FINISHED:
            out.append(status.parent.resolve())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--label", default="", help="what the message says the runs are (default: the directory)")
    args = parser.parse_args()
    runs_dir = args.runs_dir.resolve()
    runs = changed(finished_runs(runs_dir))
    extras = [p for p in (runs_dir / "grids", runs_dir / "looks") if p.exists()]
    if not runs and not changed(extras):
        print("nothing to commit")
        return 0
    subprocess.run(["git", "add", "--", *map(str, runs + extras)], cwd=ROOT, check=True)
    total = len(finished_runs(runs_dir))
    label = args.label or runs_dir.relative_to(ROOT).as_posix()
    message = f"{label}: {len(runs)} more run(s) ({total} finished run records under {runs_dir.name})"
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=ROOT, check=True)
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
