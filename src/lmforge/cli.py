"""`lmforge <command>`: parse arguments, call the library, print. One module per command in commands/."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import LmforgeError

# Each module in lmforge.commands defines `register(subparsers)`, which adds its parser and sets
# `run=function(args) -> int`. Add a command by adding its module name here.
COMMANDS = ["info", "tokenizer", "prepare", "convert", "pretrain", "generate", "chat",
            "fill_mask", "classify", "tag", "translate", "embed", "distill", "finetune", "evaluate", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmforge",
        description="Build, pretrain, fine-tune, distill, evaluate and run Transformer language models.",
    )
    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"lmforge.commands.{name}").register(subparsers)
    return parser


class _ArgumentError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. User mistakes print one line on stderr and return 2; Ctrl-C returns 130."""
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 with a usage line on bad arguments
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except LmforgeError as error:
        print(f"lmforge {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lmforge {args.command}: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
