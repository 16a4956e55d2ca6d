"""`lmforge fill-mask MODEL [TEXT ...]`: the most likely tokens at each mask token."""

from __future__ import annotations

from .textio import add_common, make_pipeline, print_json, read_texts, warnings_on_stderr


def register(subparsers) -> None:
    parser = subparsers.add_parser("fill-mask", help="predict masked tokens with a masked-lm model",
                                   description="For each input holding the mask token (e.g. [MASK] or <mask>), "
                                               "print the --top-k most likely tokens with their probabilities.")
    add_common(parser)
    parser.add_argument("--top-k", type=int, default=5)
    parser.set_defaults(run=run)


def run(args) -> int:
    texts = read_texts(args)
    with warnings_on_stderr("fill-mask"):
        fill = make_pipeline("fill-mask", args)
        for text, result in zip(texts, fill(texts, top_k=args.top_k)):
            per_mask = result if result and isinstance(result[0], list) else [result]
            if args.json:
                print_json({"input": text, "predictions": per_mask})
                continue
            print(text)
            for number, candidates in enumerate(per_mask, start=1):
                for candidate in candidates:
                    label = f"mask {number}  " if len(per_mask) > 1 else ""
                    print(f"  {label}{candidate['score']:.4f}  {candidate['token_str']!r:<14} {candidate['sequence']}")
    return 0
