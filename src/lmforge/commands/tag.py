"""`lmforge tag MODEL [TEXT ...]`: named entities (B-/I- tags grouped into character spans)."""

from __future__ import annotations

from .textio import add_common, make_pipeline, print_json, read_texts, warnings_on_stderr


def register(subparsers) -> None:
    parser = subparsers.add_parser("tag", help="find entities with a token-classification model",
                                   description="Print the entities of each input: type, text, character span "
                                               "and mean probability.")
    add_common(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    texts = read_texts(args)
    with warnings_on_stderr("tag"):
        tagger = make_pipeline("token-classification", args)
        for text, entities in zip(texts, tagger(texts)):
            if args.json:
                print_json({"input": text, "entities": entities})
                continue
            print(text)
            for e in entities:
                print(f"  {e['entity_group']:<12} {e['word']!r} [{e['start']}:{e['end']}] {e['score']:.4f}")
    return 0
