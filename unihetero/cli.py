"""`unihetero`: one CLI, subcommands that are thin shells over study, sweeps, analysis and reports."""

from __future__ import annotations

import argparse
import difflib
import sys

from study.errors import UserError

COMMAND_MODULES = (
    "unihetero.commands.train",
    "unihetero.commands.fit",
    "unihetero.commands.power",
    "unihetero.commands.sweep",
    "unihetero.commands.search",
    "unihetero.commands.report",
    "unihetero.commands.track",
    "unihetero.commands.bench",
    "unihetero.commands.data",
    "unihetero.commands.hf",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line, from the (sub)command that met them, exit code 2.

    Unknown arguments are reported by the deepest subcommand (argparse would report them from the top,
    without naming the subcommand), with the closest valid option when one is close.
    """

    def parse_known_args(self, args: list[str] | None = None,  # noqa: D102
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and " " in self.prog:  # a subcommand: its own unknown arguments are its error
            self.error(f"unrecognized arguments: {' '.join(extras)}{self._suggestion(extras)}")
        return namespace, extras

    def _suggestion(self, extras: list[str]) -> str:
        options = [s for action in self._actions for s in action.option_strings if s.startswith("--")]
        for arg in extras:
            if arg.startswith("--"):
                close = difflib.get_close_matches(arg.split("=", 1)[0], options, n=1, cutoff=0.6)
                if close:
                    return f" (did you mean {close[0]}?)"
        return ""

    def error(self, message: str) -> None:  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The `unihetero` parser, each command module adding its own subcommand."""
    import importlib

    parser = _Parser(prog="unihetero", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a UserError is one line on stderr with its exit code (2 for bad input)."""
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
