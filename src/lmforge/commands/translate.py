"""`lmforge translate` and `lmforge summarize MODEL [TEXT ...]`: text-to-text with an encoder-decoder."""

from __future__ import annotations

from .textio import (add_common, add_generation_flags, generation_overrides, make_pipeline, print_json, read_texts,
                     warnings_on_stderr)

KINDS = {"translate": ("translation", "translate each input (e.g. with a model fine-tuned on Multi30k)"),
         "summarize": ("summarization", "summarize each input")}


def register(subparsers) -> None:
    for command, (task, summary) in KINDS.items():
        parser = subparsers.add_parser(command, help=f"{summary} with an encoder-decoder (seq2seq-lm) model",
                                       description=f"{summary[0].upper() + summary[1:]}: TEXT arguments, or one "
                                                   "input per line on stdin; prints one output per line.")
        add_common(parser)
        add_generation_flags(parser, max_new_tokens=64)
        parser.add_argument("--prefix", default="", help='text put before every input (T5: "translate English '
                                                         'to German: ")')
        parser.set_defaults(run=run, pipeline_task=task)


def run(args) -> int:
    texts = read_texts(args)
    with warnings_on_stderr(args.command):
        model = make_pipeline(args.pipeline_task, args, prefix=args.prefix)
        options = generation_overrides(args, model.model.tokenizer)
        for text, result in zip(texts, model(texts, **options)):
            if args.json:
                print_json({"input": text, **result})
            else:
                print(next(iter(result.values())), flush=True)
    return 0
