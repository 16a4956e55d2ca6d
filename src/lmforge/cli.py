"""`lmforge <command>`: parse arguments, call the library, print. One module per command in commands/."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import torch

from . import __version__
from .commands.textio import warnings_on_stderr
from .errors import ConfigError, LmforgeError
from .files import describe_os_error

# Each module in lmforge.commands defines `register(subparsers)`, which adds its parser and sets
# `run=function(args) -> int`. Add a command by adding its module name here.
COMMANDS = ["info", "tokenizer", "prepare", "convert", "pretrain", "generate", "chat",
            "fill_mask", "classify", "tag", "translate", "embed", "distill", "finetune", "evaluate", "demo", "serve"]


class Parser(argparse.ArgumentParser):
    """Options may stand anywhere among a command's positionals (`lmforge classify MODEL --adapter DIR TEXT ...`):
    a command's own arguments are parsed intermixed; a parser of subcommands parses as argparse does."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing or self._subparsers is not None:  # intermixed parsing calls back in here
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="lmforge",
        description="Build, pretrain, fine-tune, distill, evaluate and run Transformer language models.",
    )
    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"lmforge.commands.{name}").register(subparsers)
    for command in _leaf_parsers(parser):
        command.add_argument("--threads", type=int, metavar="N",
                             help="CPU threads for torch and the tokenizers (default: all cores; on a shared "
                                  "machine fewer threads than cores avoids threads fighting for one core)")
    return parser


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers that run a command (`lmforge tokenizer train`, `lmforge pretrain`, ...)."""
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not nested:
        return [parser]
    return [leaf for action in nested for child in dict.fromkeys(action.choices.values())
            for leaf in _leaf_parsers(child)]


def use_threads(threads: int | None) -> None:
    """Limit torch and the tokenizers library (RAYON_NUM_THREADS, read when it first runs) to `threads`."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    os.environ["RAYON_NUM_THREADS"] = str(threads)


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
        use_threads(getattr(args, "threads", None))
        with warnings_on_stderr(args.command, always=False):  # each warning as one line
            return int(args.run(args) or 0)
    except LmforgeError as error:
        return _fail(args.command, str(error))
    except OSError as error:  # a path that cannot be read or written: full disk, read-only, a file in the way
        return _fail(args.command, describe_os_error(error))
    except KeyboardInterrupt as interrupt:
        message = str(interrupt) or "interrupted; nothing half-written was kept"
        print(f"lmforge {args.command}: {message}", file=sys.stderr)
        return 130


def _fail(command: str, message: str) -> int:
    """One line on stderr (newlines inside a message are joined), exit status 2."""
    print(f"lmforge {command}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2
