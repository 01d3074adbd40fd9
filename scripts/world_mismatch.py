"""What the world-v1 held-out renders did to a world-v2 run's numbers (the 2026-12-06 erratum): each run's last
checkpoint evaluated on its own world and, with the same weights, on the world-v1 renders the committed v2
records were measured on (`data.world_version: 1`, every other data key the run's).

    python scripts/world_mismatch.py OUT.md RUN_DIR [RUN_DIR ...]

Prints and writes a table: per run and metric, the value on the run's own world, on the v1 renders, and their
difference (own minus v1), then the mean difference over the runs.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from study.data.worlds import build_world  # noqa: E402
from study.evaluate import evaluate  # noqa: E402
from study.rebuild import load_vlm  # noqa: E402

METRICS = ("zs_norm", "zs_acc", "zs_acc/size", "zs_acc/colour", "zs_acc/shape", "zs_acc/location", "caption_loss",
           "probe_acc/shape", "probe_acc/colour", "probe_acc/size")


def both_worlds(run_dir: str) -> tuple[int, dict, dict]:
    """(step, metrics on the run's own world, metrics on the v1 renders of the same data config)."""
    run = load_vlm(run_dir, command="world_mismatch")
    cfg = run.inputs.resolved
    v1 = build_world(dataclasses.replace(cfg.data, world_version=1))
    own = evaluate(run.model, cfg, run.step, final=False, world=run.inputs.world)
    other = evaluate(run.model, cfg, run.step, final=False, world=v1)
    return run.step, own, other


def main(out: str, *runs: str) -> None:
    lines = ["| run | step | metric | own world (v2) | v1 renders | own - v1 |", "|---|---|---|---|---|---|"]
    diffs: dict[str, list[float]] = {m: [] for m in METRICS}
    for run_dir in runs:
        step, own, other = both_worlds(run_dir)
        for m in METRICS:
            diffs[m].append(own[m] - other[m])
            lines.append(f"| {Path(run_dir).name} | {step} | {m} | {own[m]:.3f} | {other[m]:.3f} | "
                         f"{own[m] - other[m]:+.3f} |")
    lines += ["", "| metric | mean of own - v1 over the runs |", "|---|---|"]
    lines += [f"| {m} | {sum(d) / len(d):+.3f} |" for m, d in diffs.items()]
    text = "\n".join(lines) + "\n"
    Path(out).write_text(text)
    print(text)


if __name__ == "__main__":
    main(*sys.argv[1:])
