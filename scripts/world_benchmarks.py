"""Write benchmark files from held-out world images (answers known) for `unihetero bench` on a miniature run.

    python scripts/world_benchmarks.py OUT_DIR --config cpu-v2 [--images 256]

writes OUT_DIR/colour_mc.tsv (MMBench layout), OUT_DIR/count/ (ImageFolder) and OUT_DIR/captions/captions.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from study.config import load_config
from study.data.worlds import build_world
from study.evaluation.bench import world_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--config", default="cpu-v2", help="preset or YAML whose world the images come from")
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    world, out = build_world(load_config(args.config).data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(world_tasks.write_tsv(out / "colour_mc.tsv", world_tasks.colour_questions(world, args.images)))
    print(world_tasks.write_count_folder(out / "count", world, args.images))
    print(world_tasks.write_captions(out / "captions" / "captions.json", world, args.images))


if __name__ == "__main__":
    main()
