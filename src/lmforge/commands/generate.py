"""`lmforge generate MODEL [TEXT ...]`: continue prompts with a causal LM, streaming tokens as they come."""

from __future__ import annotations

import sys

from .textio import (add_common, add_generation_flags, generation_overrides, make_pipeline, print_json, read_texts,
                     warnings_on_stderr)


def register(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="continue text with a decoder (causal-lm) model",
                                   description="Continue each prompt (TEXT arguments, or one per line on stdin). "
                                               "Greedy by default; --sample, --num-beams for other strategies. "
                                               "Prints tokens as they are produced unless --json, --no-stream "
                                               "or beam search.")
    add_common(parser)
    add_generation_flags(parser, max_new_tokens=50)
    parser.add_argument("--no-stream", action="store_true", help="print each result when it is complete")
    parser.add_argument("--compile", action="store_true",
                        help="compile the decoding step (torch.compile over a static cache; greedy or --sample, not "
                             "--num-beams): the first prompt waits for the compiler, later tokens come faster on small "
                             "models; falls back to eager decoding with a warning when compiling fails")
    parser.set_defaults(run=run)


def run(args) -> int:
    texts = read_texts(args)
    with warnings_on_stderr("generate"):
        generator = make_pipeline("text-generation", args)
        options = generation_overrides(args, generator.model.tokenizer, compile=args.compile)
        if args.json or args.no_stream or options["num_beams"] > 1:
            for text, result in zip(texts, generator(texts, **options)):
                if args.json:
                    print_json({"input": text, **result})
                else:
                    print(result["generated_text"], flush=True)
            return 0
        for text in texts:
            pieces = generator.stream(text, **options)
            first = next(pieces, "")  # checks the prompt and options, so a refused one prints nothing
            sys.stdout.write(text + first)
            sys.stdout.flush()
            for piece in pieces:
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
    return 0
