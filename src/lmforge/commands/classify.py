"""`lmforge classify MODEL [TEXT ...]`: label and probability of each text."""

from __future__ import annotations

from .textio import add_common, make_pipeline, print_json, read_texts, warnings_on_stderr


def register(subparsers) -> None:
    parser = subparsers.add_parser("classify", help="label texts with a sequence-classification model",
                                   description="Print the predicted label and its probability for each input "
                                               "(--top-k for the k best labels).")
    add_common(parser)
    parser.add_argument("--top-k", type=int, default=1)
    parser.set_defaults(run=run)


def run(args) -> int:
    texts = read_texts(args)
    with warnings_on_stderr("classify"):
        classifier = make_pipeline("text-classification", args)
        for text, result in zip(texts, classifier(texts, top_k=args.top_k)):
            ranked = result if isinstance(result, list) else [result]
            if args.json:
                print_json({"input": text, "labels": ranked})
            else:
                labels = "  ".join(f"{r['label']}\t{r['score']:.4f}" for r in ranked)
                print(f"{labels}\t{text}", flush=True)
    return 0
