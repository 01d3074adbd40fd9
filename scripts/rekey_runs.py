"""Rename run directories to the run id their config has now, and update grid membership files to match.

Run ids hashed the whole resolved config until 2026-11-26; they now hash its non-default values, so adding a
config field keeps every id. Runs made before that change keep their old directory names until this runs:

    python scripts/rekey_runs.py RUNS_DIR [--dry-run]

Nothing is deleted: a directory whose new name is taken is left where it is and reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from study.errors import UserError
from study.files import atomic_write
from study.runstore import RunStore


def new_ids(runs_dir: Path) -> dict[str, str]:
    """{old directory name: new run id} for every run directory whose name is not its config's run id."""
    moves = {}
    for path in sorted(p for p in runs_dir.iterdir() if (p / "config.yaml").is_file()):
        try:
            run_id = RunStore(path).config().run_id()
        except UserError as e:
            print(f"skipped {path.name}: {e}", file=sys.stderr)
            continue
        if run_id != path.name:
            moves[path.name] = run_id
    return moves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="list the renames, change nothing")
    args = parser.parse_args(argv)
    moves = new_ids(args.runs_dir)
    for old, new in moves.items():
        target = args.runs_dir / new
        if target.exists():
            print(f"left {old}: {new} already exists", file=sys.stderr)
            continue
        print(f"{old} -> {new}")
        if not args.dry_run:
            (args.runs_dir / old).rename(target)
    for grid in sorted((args.runs_dir / "grids").glob("*.json")):
        body = json.loads(grid.read_text())
        for trial in body.get("trials", []):
            trial["run_id"] = moves.get(trial["run_id"], trial["run_id"])
        if not args.dry_run:
            atomic_write(grid, json.dumps(body, indent=1).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
