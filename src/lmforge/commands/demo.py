"""`lmforge demo`: pretrain, fine-tune, compare with from-scratch and report, in one command."""

from __future__ import annotations
from ..demo.run import run_demo


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="the transfer-learning experiment in one command",
        description="Build a corpus from the Python standard library's docstrings, pretrain a small BERT with "
                    "masked-LM, fine-tune it to tell which package a docstring documents, train the same "
                    "architecture from scratch with the same budget (and fine-tune all-MiniLM-L6-v2 when "
                    "installed), and report scores, time, energy and CO2 in OUT/report.html.")
    parser.add_argument("--out", default="runs/demo", help="folder for everything the demo writes (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help="a tiny version that runs in about a minute")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished demo in --out")
    parser.add_argument("--no-minilm", action="store_true", help="skip the all-MiniLM-L6-v2 arm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args) -> int:
    run_demo(args.out, quick=args.quick, overwrite=args.overwrite, seed=args.seed, with_minilm=not args.no_minilm,
             progress=not args.quiet)
    return 0
