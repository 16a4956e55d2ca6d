"""What the inference commands share: model + texts arguments (or stdin), JSON Lines output,
generation flags, and warnings printed as one line on stderr."""

from __future__ import annotations

import json
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import InputError
from ..infer.options import GenerationOptions
from ..infer.pipelines import pipeline
from .flags import add_adapter_flag, add_dtype_flag


def add_common(parser, batch_size: int = 8) -> None:
    """MODEL, TEXT..., --json, --no-truncate, --batch-size."""
    parser.add_argument("model", metavar="MODEL", help="checkpoint folder (lmforge or Hugging Face)")
    parser.add_argument("texts", nargs="*", metavar="TEXT",
                        help="input texts; without any, read one input per line from stdin")
    parser.add_argument("--json", action="store_true", help="print one JSON object per input (JSON Lines)")
    parser.add_argument("--no-truncate", action="store_true",
                        help="fail on inputs longer than the model accepts instead of truncating them")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"inputs per batch (default {batch_size})")
    add_adapter_flag(parser)
    add_dtype_flag(parser)


def add_generation_flags(parser, max_new_tokens: int) -> None:
    """Decoding flags: length, greedy/sampling/beam search, penalties, stop tokens, seed."""
    group = parser.add_argument_group("decoding")
    group.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    group.add_argument("--sample", action="store_true", help="sample instead of picking the most likely token")
    group.add_argument("--temperature", type=float, default=1.0)
    group.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0 = all)")
    group.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (1 = off)")
    group.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (1 = off)")
    group.add_argument("--length-penalty", type=float, default=1.0)
    group.add_argument("--early-stopping", choices=["true", "false", "never"], default="false")
    group.add_argument("--repetition-penalty", type=float, default=1.0)
    group.add_argument("--stop", action="append", default=[], metavar="TOKEN",
                       help="a token (as written in the vocabulary) that ends generation; repeatable")
    group.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")


def generation_overrides(args, tokenizer, **more) -> dict:
    """Generation options from the decoding flags and `more` options a command has flags for (checked; unset
    ones left out); an unknown --stop token is an InputError."""
    stop_ids = []
    for token in args.stop:
        index = tokenizer.token_to_id(token)
        if index is None:
            raise InputError(f"--stop {token!r} is not a token of the model's vocabulary")
        stop_ids.append(index)
    early = {"true": True, "false": False, "never": "never"}[args.early_stopping]
    options = GenerationOptions(
        max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, num_beams=args.num_beams, length_penalty=args.length_penalty, early_stopping=early,
        repetition_penalty=args.repetition_penalty, stop_token_ids=stop_ids or None, seed=args.seed, **more,
    ).validate()
    return {name: value for name, value in vars(options).items() if value is not None}


def read_texts(args) -> list[str]:
    """The TEXT arguments, or the non-blank lines of stdin; an InputError when there is nothing."""
    texts = list(args.texts) if args.texts else [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise InputError("no input text; give TEXT arguments or lines on stdin")
    return texts


def _unchanged(result):
    return result


@dataclass(frozen=True)
class PipelineCommand:
    """A command that runs one pipeline over texts (MODEL, TEXT... or stdin, the common flags) and prints each
    result: a JSON line {"input": text, key: result} with --json, else as `show(text, result)` prints it."""

    name: str
    task: str  # the pipeline task
    help: str
    description: str
    key: str  # the result's key in a JSON line
    show: Callable[[str, Any], None]
    shape: Callable[[Any], Any] = _unchanged  # the pipeline's result as the command shows it
    top_k: int | None = None  # --top-k's default (None: the command has no --top-k)
    batch_size: int = 8

    def register(self, subparsers) -> None:
        parser = subparsers.add_parser(self.name, help=self.help, description=self.description)
        add_common(parser, batch_size=self.batch_size)
        if self.top_k is not None:
            parser.add_argument("--top-k", type=int, default=self.top_k)
        parser.set_defaults(run=self.run)

    def run(self, args) -> int:
        texts = read_texts(args)
        call = {"top_k": args.top_k} if self.top_k is not None else {}
        with warnings_on_stderr(self.name):
            pipe = make_pipeline(self.task, args)
            for text, result in zip(texts, pipe(texts, **call)):
                result = self.shape(result)
                if args.json:
                    print_json({"input": text, self.key: result})
                else:
                    self.show(text, result)
        return 0


def make_pipeline(task: str, args, **kwargs):
    return pipeline(task, model=args.model, truncation=not args.no_truncate, batch_size=args.batch_size,
                    adapter=args.adapter, dtype=args.dtype, **kwargs)


def print_json(record: dict) -> None:
    print(json.dumps(record, ensure_ascii=False), flush=True)


@contextmanager
def warnings_on_stderr(command: str, always: bool = True):
    """Library warnings (e.g. truncation) as one line each: `lmforge COMMAND: warning: ...`; `always`
    repeats a warning each time it is raised (the pipelines' per-input truncation notes)."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"lmforge {command}: warning: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        if always:
            warnings.simplefilter("always")
        warnings.showwarning = show
        yield
