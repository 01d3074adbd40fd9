"""`unihetero hf tiny`: tiny random checkpoints of each backbone class (transformers, diffusers) for tests."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """The `hf` commands' arguments."""
    p = sub.add_parser("hf", help="pretrained-backbone utilities")
    hf_sub = p.add_subparsers(dest="hf_command", required=True, parser_class=type(p))
    t = hf_sub.add_parser("tiny", help="write tiny random DINOv2, SigLIP, Qwen2, Llama (with tokenizer) and KL VAE "
                          "checkpoints, one directory each")
    t.add_argument("out_dir")
    t.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default: 0)")
    t.set_defaults(func=run_tiny)


def run_tiny(args: argparse.Namespace) -> int:
    """`unihetero hf tiny OUT`: write tiny random pretrained-format checkpoints, one directory each."""
    from study.model.hf_tiny import write_tiny

    for name, path in write_tiny(Path(args.out_dir), args.seed).items():
        print(f"{name}\t{path}")
    return 0
