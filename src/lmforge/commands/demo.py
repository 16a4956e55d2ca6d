"""`lmforge demo`: pretrain, fine-tune, compare with from-scratch and report, in one command."""

from __future__ import annotations
from ..demo.run import SIZES, run_demo
from ..errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="the transfer-learning experiment in one command: a label-efficiency curve",
        description="Build a corpus from the Python standard library's docstrings, pretrain a small BERT with "
                    "masked-LM, then fine-tune it to tell which package a docstring documents from only k labelled "
                    "docstrings per package (several k, several seeds), beside the same architecture from scratch "
                    "(and all-MiniLM-L6-v2 when installed); a paired test per k says whether pretraining helped. "
                    "Scores, time, energy and CO2 in OUT/report.html.")
    parser.add_argument("--out", default="runs/demo", help="folder for everything the demo writes (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help="a tiny version that runs in about a minute")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), metavar="K,K,...",
                        help=f"labelled examples per class to fine-tune on (default {','.join(map(str, SIZES))})")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished demo in --out")
    parser.add_argument("--no-minilm", action="store_true", help="skip the all-MiniLM-L6-v2 arm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def parse_sizes(text: str) -> tuple[int, ...]:
    """"4,16,64" -> (4, 16, 64); ConfigError naming the flag otherwise."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--sizes takes whole numbers separated by commas, like 4,16,64; got {text!r}") from None


def run(args) -> int:
    run_demo(args.out, quick=args.quick, overwrite=args.overwrite, seed=args.seed, with_minilm=not args.no_minilm,
             progress=not args.quiet, sizes=parse_sizes(args.sizes))
    return 0
