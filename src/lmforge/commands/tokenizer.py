"""`lmforge tokenizer train --kind bpe|wordpiece|unigram --vocab-size N --out DIR INPUTS...`."""

from __future__ import annotations

from ..checkpoint.atomic import atomic_folder
from ..checkpoint.output import claim_folder, mark_folder
from ..errors import DataError
from ..tokenizer import SPECIAL_ROLES, train_tokenizer


def register(subparsers) -> None:
    parser = subparsers.add_parser("tokenizer", help="train a tokenizer",
                                   description="Tokenizer tools. `train` learns a vocabulary from raw text.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train a BPE, WordPiece or Unigram tokenizer on raw text",
                               description="Train byte-level BPE (GPT-2), WordPiece (BERT) or Unigram (T5) on "
                                           ".txt / .jsonl / .gz files or folders; writes DIR/tokenizer.json.")
    train.add_argument("inputs", nargs="+", metavar="INPUT")
    train.add_argument("--kind", required=True, choices=["bpe", "wordpiece", "unigram"])
    train.add_argument("--vocab-size", type=int, required=True, help="tokens in total, special tokens included")
    train.add_argument("--out", required=True, metavar="DIR")
    train.add_argument("--overwrite", action="store_true", help="replace a tokenizer lmforge wrote in --out")
    train.add_argument("--min-frequency", type=int, default=2, help="BPE/WordPiece: rarest pair or word kept")
    train.add_argument("--lowercase", action="store_true", help="lower-case text first (BERT uncased)")
    train.add_argument("--special", action="append", default=[], metavar="ROLE=TOKEN",
                       help="add or replace a special token, e.g. mask=<mask> (repeatable)")
    train.add_argument("--blank-line-docs", action="store_true", help="a blank line separates documents in .txt")
    train.add_argument("--text-field", default="text", help="JSONL field holding the text")
    train.add_argument("--errors", choices=["strict", "replace"], default="strict",
                       help="what to do with bytes that are not UTF-8")
    train.set_defaults(run=run_train)


def run_train(args) -> int:
    specials = {}
    for item in args.special:
        role, _, token = item.partition("=")
        if role not in SPECIAL_ROLES or not token:
            raise DataError(f"--special {item!r} must be ROLE=TOKEN with ROLE one of {', '.join(SPECIAL_ROLES)}")
        specials[role] = token
    claim_folder(args.out, "tokenizer", args.overwrite)
    tokenizer = train_tokenizer(args.kind, args.vocab_size, args.inputs, specials=specials,
                                min_frequency=args.min_frequency, lowercase=args.lowercase, show_progress=True,
                                text_options={"blank_line_docs": args.blank_line_docs,
                                              "text_field": args.text_field, "errors": args.errors})
    with atomic_folder(args.out) as tmp:
        tokenizer.save(tmp)
        mark_folder(tmp, "tokenizer")
    roles = ", ".join(f"{role} {token}" for role, token in tokenizer.specials.items())
    print(f"wrote {args.out}/tokenizer.json: {args.kind}, {tokenizer.vocab_size:,} tokens ({roles}), "
          f"hash {tokenizer.fingerprint}")
    return 0
