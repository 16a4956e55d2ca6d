"""`lmforge prepare --tokenizer DIR --out DIR INPUTS...`: raw text -> memory-mapped token shards."""

from __future__ import annotations

from ..data.corpus import prepare_corpus
from ..tokenizer import Tokenizer


def register(subparsers) -> None:
    parser = subparsers.add_parser("prepare", help="tokenize a corpus into token shards for pretraining",
                                   description="Tokenize .txt / .jsonl / .gz files and folders (streaming, on all "
                                               "cores) into memory-mapped token shards with an index.json and a "
                                               "held-out validation split.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT")
    parser.add_argument("--tokenizer", required=True, metavar="DIR",
                        help="a folder with tokenizer.json (or a checkpoint folder)")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--overwrite", action="store_true", help="replace token shards lmforge wrote in --out")
    parser.add_argument("--blank-line-docs", action="store_true",
                        help="a blank line separates documents in .txt files (default: one document per file)")
    parser.add_argument("--text-field", default="text", help="JSONL field holding the text")
    parser.add_argument("--valid-fraction", type=float, default=0.01, help="share of documents held out")
    parser.add_argument("--errors", choices=["strict", "replace"], default="strict",
                        help="what to do with bytes that are not UTF-8")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args) -> int:
    index = prepare_corpus(args.inputs, Tokenizer.load(args.tokenizer), args.out,
                           blank_line_docs=args.blank_line_docs, text_field=args.text_field,
                           valid_fraction=args.valid_fraction, errors=args.errors, progress=not args.quiet,
                           overwrite=args.overwrite)
    megabytes = index["source_bytes"] / 1e6
    print(f"wrote {args.out}: {index['documents']:,} documents, {index['train']['tokens']:,} train + "
          f"{index['valid']['tokens']:,} valid tokens ({index['dtype']}), "
          f"{megabytes:.1f} MB in {index['seconds']:.1f} s ({megabytes / max(index['seconds'], 1e-9):.2f} MB/s)")
    return 0
