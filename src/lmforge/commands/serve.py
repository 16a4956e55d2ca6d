"""`lmforge serve MODEL [--model NAME=PATH ...]`: an HTTP server for every task, with continuous batching."""

from __future__ import annotations

import os

from ..errors import InputError
from ..models.weight_formats import WEIGHT_DTYPES
from ..serve.server import ServeOptions, serve


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve models over HTTP (OpenAI-compatible, pipelines, web playground)",
        description="Serve one or more checkpoints: /v1/completions, /v1/chat/completions, /v1/embeddings, "
                    "/v1/pipelines/{task}, /v1/models, /tokenize, /health, /metrics and a playground at /. "
                    "Needs the serve extra: pip install 'lmforge[serve]'.")
    parser.add_argument("model", metavar="MODEL", help="checkpoint folder; served under its folder name")
    parser.add_argument("--model", dest="extra_models", action="append", default=[], metavar="NAME=PATH",
                        help="another checkpoint, served as NAME; repeatable")
    parser.add_argument("--task", dest="tasks", action="append", default=[], metavar="[NAME=]TASK",
                        help="serve only these pipeline tasks (of model NAME, or of every model); repeatable")
    parser.add_argument("--dtype", dest="dtypes", action="append", default=[], metavar="[NAME=]DTYPE",
                        help=f"weight format of model NAME (or of every model): {' | '.join(WEIGHT_DTYPES)} "
                             "(default fp32); repeatable")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=os.environ.get("LMFORGE_API_KEY"),
                        help="require 'Authorization: Bearer KEY' on every route but /health and the playground page "
                             "(default: $LMFORGE_API_KEY)")
    parser.add_argument("--cors-origin", dest="cors_origins", action="append", default=[], metavar="ORIGIN",
                        help="allow browsers on ORIGIN (e.g. http://localhost:3000) to call the API; repeatable")
    parser.add_argument("--max-batch", type=int, default=16,
                        help="requests decoded together per model (1 = one at a time); default 16")
    parser.add_argument("--max-queue", type=int, default=64,
                        help="requests waiting per model before new ones get 429; default 64")
    parser.add_argument("--prefill-chunk", type=int, default=128,
                        help="prompt tokens prefilled per engine turn, between decoding steps; default 128")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body; default 1 MiB")
    parser.add_argument("--drain-seconds", type=float, default=30.0,
                        help="on SIGTERM, how long running requests may finish before the server exits; default 30")
    parser.add_argument("--keepalive-seconds", type=float, default=10.0,
                        help="send a keep-alive comment on a stream that waits this long; default 10")
    parser.set_defaults(run=run)


def run(args) -> int:
    options = ServeOptions(**{name: getattr(args, name) for name in ServeOptions.__dataclass_fields__})
    try:
        return serve(options, log=lambda line: print(f"lmforge serve: {line}", flush=True))
    except ModuleNotFoundError as error:
        if error.name not in ("fastapi", "uvicorn", "starlette", "jinja2"):
            raise
        raise InputError(f"lmforge serve needs its extra packages ({error.name} is missing); "
                         "install them with: pip install 'lmforge[serve]'") from None
