"""`lmforge chat MODEL`: talk with a chat model in the terminal, its replies streamed as they are produced."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError
from ..infer.chat import compile_template
from ..infer.pipelines import pipeline
from .flags import add_dtype_flag
from .textio import add_generation_flags, generation_overrides, warnings_on_stderr

COMMANDS_HELP = "/reset forgets the conversation, /exit (or end of input) quits"


def register(subparsers) -> None:
    parser = subparsers.add_parser("chat", help="chat with a causal-lm model that has a chat template",
                                   description="Read one message per line from the terminal (or stdin), answer it "
                                               "with the model's chat template and the whole conversation so far, "
                                               f"streaming the reply. {COMMANDS_HELP}.")
    parser.add_argument("model", metavar="MODEL", help="checkpoint folder (lmforge or Hugging Face)")
    parser.add_argument("--system", default=None, help="a system message that starts every conversation")
    parser.add_argument("--template", type=Path, default=None, metavar="FILE",
                        help="a Jinja chat template to use instead of the model's own")
    add_dtype_flag(parser)
    add_generation_flags(parser, max_new_tokens=256)
    parser.set_defaults(run=run)


def run(args) -> int:
    with warnings_on_stderr("chat"):
        chat = pipeline("text-generation", model=args.model, dtype=args.dtype)
        tokenizer = chat.model.tokenizer
        if args.template is not None:
            if not args.template.is_file():
                raise InputError(f"--template {args.template} does not exist; give a Jinja chat template file")
            tokenizer.chat_template = args.template.read_text(encoding="utf-8")
        if tokenizer.chat_template is None:
            raise InputError(f"{args.model} has no chat template (tokenizer_config.json 'chat_template' or "
                             "chat_template.jinja); give one with --template FILE, or use `lmforge generate`")
        compile_template(tokenizer.chat_template)  # a broken template fails now, not after the first message
        options = generation_overrides(args, tokenizer)
        if options["num_beams"] > 1:
            raise InputError("chat streams its replies and beam search cannot stream; drop --num-beams")
        interactive = sys.stdin.isatty()
        if interactive:
            print(f"chatting with {args.model}; {COMMANDS_HELP}", file=sys.stderr)
        start = [{"role": "system", "content": args.system}] if args.system else []
        history = list(start)
        for line in _lines(interactive):
            text = line.strip()
            if text in ("/exit", "/quit"):
                break
            if text == "/reset":
                history = list(start)
                print("(conversation reset)", flush=True)
                continue
            if not text:
                continue
            history.append({"role": "user", "content": text})
            reply = ""
            for piece in chat.stream_chat(history, **options):
                reply += piece
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            sys.stdout.flush()
            history.append({"role": "assistant", "content": reply})
    return 0


def _lines(interactive: bool):
    """Lines typed at a `you> ` prompt, or read from piped stdin, until end of input."""
    while True:
        if interactive:
            sys.stderr.write("you> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            return
        yield line
