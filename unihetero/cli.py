"""`unihetero`: one CLI, subcommands that are thin shells over study, sweeps, analysis and reports."""

from __future__ import annotations

import argparse
import sys

from study.errors import UserError

COMMAND_MODULES = (
    "unihetero.commands.train",
    "unihetero.commands.fit",
    "unihetero.commands.sweep",
    "unihetero.commands.search",
    "unihetero.commands.report",
    "unihetero.commands.data",
    "unihetero.commands.hf",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line with exit code 2 (its default code)."""

    def error(self, message: str) -> None:  # noqa: D102
        self.exit(2, f"unihetero {self.prog.split()[-1]}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(prog="unihetero", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
