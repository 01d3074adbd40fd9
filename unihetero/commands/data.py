"""`unihetero data shards`: write WebDataset shards and their index from captioned images or the world."""

from __future__ import annotations

import argparse
from pathlib import Path

from study.errors import UserError
from unihetero.commands.argtypes import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """The `data` commands' arguments."""
    p = sub.add_parser("data", help="data preparation")
    data_sub = p.add_subparsers(dest="data_command", required=True, parser_class=type(p))
    s = data_sub.add_parser("shards", help="write tar shards of (image, caption) pairs and index.json")
    s.add_argument("out_dir", help="directory for the shards and index.json")
    source = s.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="folder of images, each with a same-name .txt caption")
    source.add_argument("--world", metavar="COUNT", type=positive_int,
                        help="render the world's training indices [0, COUNT)")
    s.add_argument("--config", default="cpu-small", help="preset or YAML whose data section defines the world "
                   "(with --world; default: cpu-small)")
    s.add_argument("--shard-size", type=positive_int, default=1000, help="samples per shard (default: 1000)")
    s.set_defaults(func=run_shards)


def run_shards(args: argparse.Namespace) -> int:
    """`unihetero data shards OUT`: write tar shards of a world's (or a folder's) image-caption pairs."""
    from study.config import load_config
    from study.data.shard_writer import folder_samples, world_samples, write_shards
    from study.data.worlds import build_world

    if args.images:
        folder = Path(args.images)
        if not folder.is_dir():
            raise UserError(f"data shards --images '{folder}': not a directory")
        samples = folder_samples(folder)
    else:
        samples = world_samples(build_world(load_config(args.config).data), args.world)
    index = write_shards(samples, Path(args.out_dir), args.shard_size)
    print(f"{index['samples']} samples in {len(index['shards'])} shards: {Path(args.out_dir) / 'index.json'}")
    return 0
