"""World v2's calibration table and learning curves, from the runs of the calibration grids (rounds 1-3).

    python scripts/calibration_table.py RUNS_DIR OUT_DIR [--preset cpu] [--grids NAME ...]

For each candidate world (the grids' `world` label), text only: per attribute the final zero-shot accuracy
(mean and std over seeds) beside chance and the random-init floor (step 0), whether it is at least halfway
from chance to 1.0, the seed-to-seed std of zs_acc (target <= 0.03) and the chance-normalised mean (zs_norm).
Writes OUT_DIR/calibration.md and OUT_DIR/curves.png (each attribute vs samples seen, a line per run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from study.evaluation.zero_shot import ATTRIBUTES, chance_normalised  # noqa: E402
from study.runstore import RunStore  # noqa: E402
from sweeps.spec import load_spec, pipeline  # noqa: E402

STD_TARGET = 0.03
GRIDS = ("world_v2_calibration", "world_v2_calibration_r2", "world_v2_calibration_r3")


def candidate_runs(runs_dir: Path, preset: str, grids: tuple[str, ...] = GRIDS) -> dict[str, list[list[dict]]]:
    """Evaluation records of each run evaluated after step 0, by candidate world (an unfinished run counts with
    its last evaluation, whose step the table shows)."""
    out: dict[str, list[list[dict]]] = {}
    for trial in (t for grid in grids for t in pipeline(load_spec(grid, preset))):
        path = runs_dir / trial.run_id
        records = RunStore(path).records("eval.jsonl") if (path / "eval.jsonl").exists() else []
        if len(records) > 1:
            out.setdefault(trial.axes["world"], []).append(records)
    return out


def _std_verdict(std: float) -> str:
    if np.isnan(std):
        return "one seed"
    return f"std {'<=' if std <= STD_TARGET else '>'} {STD_TARGET}"


def table(candidates: dict[str, list[list[dict]]]) -> str:
    """The calibration table: each world's attribute accuracies beside chance and random init, and whether text only is
    halfway there."""
    lines = ["| world | seeds | at step | attribute | chance | random init | last evaluation (mean) | std over seeds "
             "| halfway? |", "|---|---|---|---|---|---|---|---|---|"]
    for world, runs in candidates.items():
        finals, floors = [r[-1] for r in runs], [r[0] for r in runs]
        at = "/".join(str(f["step"]) for f in finals)
        for a in ATTRIBUTES:
            chance = finals[0][f"chance/{a}"]
            acc = np.array([f[f"zs_acc/{a}"] for f in finals])
            floor = np.mean([f[f"zs_acc/{a}"] for f in floors])
            ok = acc.mean() >= (chance + 1) / 2
            lines.append(f"| {world} | {len(runs)} | {at} | {a} | {chance:.3f} | {floor:.3f} | {acc.mean():.3f} | "
                         f"{acc.std(ddof=1) if len(acc) > 1 else float('nan'):.3f} | {'yes' if ok else 'no'} |")
        zs = np.array([f["zs_acc"] for f in finals])
        norm = np.array([chance_normalised(f, {a: f[f"chance/{a}"] for a in ATTRIBUTES}) for f in finals])
        std = zs.std(ddof=1) if len(zs) > 1 else float("nan")
        lines.append(f"| {world} | {len(runs)} | {at} | **zs_acc** | {finals[0]['chance']:.3f} | "
                     f"{np.mean([f['zs_acc'] for f in floors]):.3f} | {zs.mean():.3f} | {std:.3f} | "
                     f"{_std_verdict(std)} |")
        lines.append(f"| {world} | {len(runs)} | {at} | **zs_norm** | 0 | - | {norm.mean():.3f} | "
                     f"{norm.std(ddof=1) if len(norm) > 1 else float('nan'):.3f} | - |")
    return "\n".join(lines)


def curves(candidates: dict[str, list[list[dict]]], path: Path) -> Path:
    """Each attribute's zero-shot accuracy over training, one panel per attribute, saved to `path`."""
    names = [*ATTRIBUTES, "count"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0), sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for c, (world, runs) in enumerate(candidates.items()):
        for i, records in enumerate(runs):
            x = [r["samples_seen"] for r in records]
            for ax, a in zip(axes, names, strict=True):
                ax.plot(x, [r[f"zs_acc/{a}"] for r in records], color=colours[c % len(colours)], lw=1, marker=".",
                        label=world if i == 0 else None)
    for ax, a in zip(axes, names, strict=True):
        chance = candidates[next(iter(candidates))][0][-1][f"chance/{a}"]
        ax.axhline(chance, color="grey", ls="--", lw=0.8)
        ax.axhline((chance + 1) / 2, color="grey", ls=":", lw=0.8)
        ax.set_title(f"zero-shot {a}")
        ax.set_xlabel("samples seen")
        ax.set_ylim(0, 1.02)
    axes[0].legend(fontsize=7)
    axes[0].set_ylabel("accuracy (dashed: chance; dotted: halfway to 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--grids", nargs="+", default=list(GRIDS))
    args = parser.parse_args()
    candidates = candidate_runs(args.runs_dir, args.preset, tuple(args.grids))
    if not candidates:
        raise SystemExit(f"no evaluated run of {', '.join(args.grids)} ({args.preset}) in {args.runs_dir}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    text = table(candidates)
    (args.out_dir / "calibration.md").write_text(
        "# World v2 calibration: text only, held-out zero-shot accuracy at the last evaluation\n\n" + text + "\n\n"
        "Learning curves: curves.png (python scripts/calibration_table.py).\n")
    print(text)
    print(curves(candidates, args.out_dir / "curves.png"))


if __name__ == "__main__":
    main()
