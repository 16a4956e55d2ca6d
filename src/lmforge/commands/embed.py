"""`lmforge embed MODEL [TEXT ...]`: mean-pooled, normalised sentence embeddings."""

from __future__ import annotations

from .textio import add_common, make_pipeline, print_json, read_texts, warnings_on_stderr


def register(subparsers) -> None:
    parser = subparsers.add_parser("embed", help="sentence embeddings (mean-pooled, L2-normalised)",
                                   description="Print one embedding per input: space-separated numbers, or "
                                               "JSON Lines with --json.")
    add_common(parser, batch_size=32)
    parser.set_defaults(run=run)


def run(args) -> int:
    texts = read_texts(args)
    with warnings_on_stderr("embed"):
        embedder = make_pipeline("feature-extraction", args)
        for text, vector in zip(texts, embedder(texts)):
            if args.json:
                print_json({"input": text, "embedding": vector})
            else:
                print(" ".join(f"{x:.6f}" for x in vector), flush=True)
    return 0
