"""The HTTP routes (FastAPI, imported here only: the library itself never needs it).

HTTP handlers validate, queue work on the model's engine and relay its events; streams follow
OpenAI's server-sent events. A client that goes away cancels its requests, which frees their batch
slots at the engine's next step.
"""


import asyncio
import base64
import json
import secrets
import struct
import time
import uuid
from pathlib import Path

from ..infer.pipelines import PIPELINES, FeatureExtraction
from .engine import EncoderJob, Event, GenerationRequest, QueueFull, ShuttingDown
from .errors import ApiError, bad_field, queue_full, unavailable
from .metrics import Metrics
from .models import ENCODER_TASKS, GENERATION_TASKS, ServedModel
from .relay import Relay, collect, sse_events, usage
from .protocol import Fields, messages, parse_json, sampling, stream_settings

PLAYGROUND = Path(__file__).with_name("playground.html")


class ServerState:
    """What the routes share: the models, metrics, limits and whether the server is ready or draining."""

    def __init__(self, models: dict[str, ServedModel], metrics: Metrics, api_key: str | None = None,
                 max_body_bytes: int = 1 << 20, keepalive_seconds: float = 10.0, retry_after: int = 1):
        self.models, self.metrics, self.api_key = models, metrics, api_key
        self.max_body_bytes, self.keepalive_seconds, self.retry_after = max_body_bytes, keepalive_seconds, retry_after
        self.draining = False

    @property
    def ready(self) -> bool:
        return all(m.engine.ready.is_set() for m in self.models.values())

    def model(self, name: str | None, param: str = "model") -> ServedModel:
        if name is None and len(self.models) == 1:
            return next(iter(self.models.values()))
        if name is None:
            raise bad_field(param, f"'{param}' is required: this server serves {', '.join(self.models)}",
                            code="missing_required_parameter")
        if name not in self.models:
            raise ApiError(404, f"the model {name!r} does not exist; this server serves: {', '.join(self.models)}",
                           type="invalid_request_error", param=param, code="model_not_found")
        return self.models[name]


def build_app(state: ServerState):
    """The FastAPI application for `state`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse

    app = FastAPI(title="lmforge serve", docs_url=None, redoc_url=None, openapi_url=None)

    def error_response(error: ApiError) -> JSONResponse:
        state.metrics.count("errors", 1, f'code="{error.code}"')
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    def check(request: Request) -> None:
        """API key, body size and draining, before any route runs; raises ApiError."""
        path = request.url.path
        if state.api_key and path not in ("/health", "/") and request.method != "OPTIONS":
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {state.api_key}".encode()):
                raise ApiError(401, "missing or wrong API key; send 'Authorization: Bearer KEY' with the "
                               "server's --api-key", type="authentication_error", code="invalid_api_key")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > state.max_body_bytes:
            raise ApiError(413, f"the request body has {length} bytes, more than the server's limit of "
                           f"{state.max_body_bytes} (--max-body-bytes)", code="request_too_large")
        if request.method == "POST" and (state.draining or not state.ready):
            raise unavailable() if state.draining else ApiError(
                503, "the server is still loading its models; retry shortly", type="service_unavailable",
                code="loading")

    class Guard:
        """`check` as a plain ASGI layer; an ApiError becomes OpenAI-shaped JSON. (Starlette's
        `@app.middleware("http")` would relay every streamed chunk through one more task and memory stream,
        event-loop work that competes with the engine's torch threads for the cores.)"""

        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http":
                try:
                    check(Request(scope))
                except ApiError as error:
                    await error_response(error)(scope, receive, send)
                    return
            await self.inner(scope, receive, send)

    app.add_middleware(Guard)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return error_response(error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        return error_response(ApiError(500, f"internal error: {type(error).__name__}: {error}", type="server_error",
                                       code="internal_error"))

    @app.exception_handler(404)
    async def not_found(request: Request, error):
        return error_response(ApiError(404, f"no route {request.method} {request.url.path}; see GET /v1/models "
                                       "and the README's Serve section", code="not_found"))

    @app.exception_handler(405)
    async def wrong_method(request: Request, error):
        return error_response(ApiError(405, f"{request.method} is not allowed on {request.url.path}",
                                       code="method_not_allowed"))

    async def body_of(request: Request) -> dict:
        raw = await request.body()
        if len(raw) > state.max_body_bytes:
            raise ApiError(413, f"the request body has {len(raw)} bytes, more than the server's limit of "
                           f"{state.max_body_bytes} (--max-body-bytes)", code="request_too_large")
        return parse_json(raw)

    # ---- information ------------------------------------------------------------------------------------
    @app.get("/health")
    async def health():
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not state.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [m.describe() for m in state.models.values()]}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def playground():
        return HTMLResponse(PLAYGROUND.read_text(encoding="utf-8"))

    @app.post("/tokenize")
    async def tokenize(request: Request):
        fields = Fields(await body_of(request))
        served = state.model(fields.get("model", (str,), None))
        text = fields.get("text", (str,), None)
        if text is None:
            text = fields.get("prompt", (str,))
        ids = served.encode(text)
        return {"model": served.name, "tokens": ids, "count": len(ids), "max_model_len": served.context_length,
                "token_strings": [served.model.tokenizer.id_to_token(i) for i in ids]}

    # ---- generation ---------------------------------------------------------------------------------------
    def submit(served: ServedModel, prompts: list[list[int]], settings) -> Relay:
        relay = Relay()
        try:
            for index, ids in enumerate(prompts):
                request = GenerationRequest(ids, settings, relay.sink(index))
                served.engine.submit(request)
                relay.requests.append(request)
        except QueueFull:
            relay.cancel()
            raise queue_full(state.retry_after) from None
        except ShuttingDown:
            relay.cancel()
            raise unavailable() from None
        state.metrics.count("requests", len(prompts), f'model="{served.name}"')
        return relay

    def stream_response(relay: Relay, count: int, chunk, prompts: list[list[int]], include_usage: bool,
                        head: dict, first_delta=None) -> StreamingResponse:
        events = sse_events(relay, count, chunk, prompts, include_usage, head, state.keepalive_seconds, first_delta)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/completions")
    async def completions(request: Request):
        fields = Fields(await body_of(request))
        served = state.model(fields.get("model", (str,), None))
        served.needs_generation("/v1/completions")
        prompts = served.completion_prompts(fields.body.get("prompt"))
        settings = sampling(fields, default_max_tokens=served.default_new_tokens(max(map(len, prompts)), 16))
        stream, include_usage = stream_settings(fields)
        for ids in prompts:
            served.check_length(ids, settings.max_tokens, "prompt")
        echo = fields.get("echo", (bool,), False)
        relay = submit(served, prompts, settings)
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": served.name}
        if stream:
            def chunk(index, text, finish):
                return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
            return stream_response(relay, len(prompts), chunk, prompts, include_usage, head)
        results = await collect(request.is_disconnected, relay, len(prompts))
        texts = [(fields.body["prompt"] if echo and isinstance(fields.body["prompt"], str) else "") + r["text"]
                 for r in results]
        return {**head, "choices": [{"index": i, "text": t, "logprobs": None, "finish_reason": r["finish_reason"]}
                                    for i, (t, r) in enumerate(zip(texts, results))],
                "usage": usage(prompts, sum(r["tokens"] for r in results))}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        fields = Fields(await body_of(request))
        served = state.model(fields.get("model", (str,), None))
        served.needs_generation("/v1/chat/completions")
        conversation = messages(fields)
        ids = served.chat_prompt(conversation)
        settings = sampling(fields, default_max_tokens=served.default_new_tokens(len(ids), 256))
        stream, include_usage = stream_settings(fields)
        served.check_length(ids, settings.max_tokens, "messages")
        relay = submit(served, [ids], settings)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": served.name}
        if stream:
            def chunk(index, text, finish):
                return {"index": index, "delta": {"content": text} if text else {}, "logprobs": None,
                        "finish_reason": finish}

            def first(index):
                return {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                        "finish_reason": None}
            return stream_response(relay, 1, chunk, [ids], include_usage, head, first_delta=first)
        result = (await collect(request.is_disconnected, relay, 1))[0]
        return {**head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                             "logprobs": None, "finish_reason": result["finish_reason"]}],
                "usage": usage([ids], result["tokens"])}

    # ---- encoder work and pipelines ---------------------------------------------------------------------
    async def run_encoder(request: Request, served: ServedModel, task: str, texts: list[str], parameters: dict):
        """Queue texts for an encoder pipeline (micro-batched with other requests of the same parameters)."""
        relay = Relay()
        pipe = served.pipelines[task]
        key = task + json.dumps(parameters, sort_keys=True)
        n_tokens = sum(len(served.encode(t)) for t in texts)

        def done(result, error):
            relay.result, relay.error = result, error
            relay.sink(0)(Event("done"))

        job = EncoderJob(key, texts, n_tokens, lambda batch: pipe(batch, **parameters), done)
        relay.requests.append(job)
        try:
            served.engine.submit_encoder(job)
        except QueueFull:
            raise queue_full(state.retry_after) from None
        except ShuttingDown:
            raise unavailable() from None
        try:
            await relay.queue.get()
        except asyncio.CancelledError:
            relay.cancel()
            raise
        if relay.error is not None:
            status = 400 if getattr(relay.error, "__module__", "").startswith("lmforge") else 500
            raise ApiError(status, str(relay.error), type="invalid_request_error" if status == 400 else "server_error",
                           param="inputs", code="invalid_input" if status == 400 else "pipeline_failed")
        return relay.result, n_tokens

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        fields = Fields(await body_of(request))
        served = state.model(fields.get("model", (str,), None))
        if FeatureExtraction.task not in served.pipelines:  # the pipeline this route serves
            raise ApiError(400, f"model {served.name!r} does not serve embeddings (feature-extraction); it can "
                           f"serve: {', '.join(served.tasks)}", param="model", code="unsupported_task")
        texts = fields.strings("input")
        encoding = fields.get("encoding_format", (str,), "float")
        if encoding not in ("float", "base64"):
            raise bad_field("encoding_format", f"'encoding_format' must be 'float' or 'base64', got {encoding!r}")
        for index, text in enumerate(texts):
            served.check_length(served.encode(text) or [0], 0, f"input[{index}]")
        vectors, n_tokens = await run_encoder(request, served, "feature-extraction", texts, {})

        def encoded(vector: list[float]):
            if encoding == "float":
                return vector
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()

        return {"object": "list", "model": served.name,
                "data": [{"object": "embedding", "index": i, "embedding": encoded(v)} for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}

    @app.post("/v1/pipelines/{task}")
    async def pipelines(task: str, request: Request):
        fields = Fields(await body_of(request))
        served = state.model(fields.get("model", (str,), None))
        if task not in ENCODER_TASKS + GENERATION_TASKS:
            raise ApiError(404, f"unknown pipeline task {task!r}; choose one of: "
                           f"{', '.join(ENCODER_TASKS + GENERATION_TASKS)}", code="unknown_task")
        if task not in served.tasks:
            raise ApiError(400, f"model {served.name!r} has a {served.model.task} head and cannot serve {task}; "
                           f"it can serve: {', '.join(served.tasks)}", param="task", code="unsupported_task")
        inputs = fields.strings("inputs")
        if not all(t.strip() for t in inputs):
            raise bad_field("inputs", "'inputs' holds an empty text; give some text to process")
        parameters = fields.get("parameters", (dict,), {})
        single = isinstance(fields.body["inputs"], str)
        if task in ENCODER_TASKS:
            allowed = set(PIPELINES[task].parameters)
            unknown = sorted(set(parameters) - allowed)
            if unknown:
                raise bad_field(f"parameters.{unknown[0]}", f"unknown parameter {unknown[0]!r} for {task}; "
                                f"allowed: {', '.join(sorted(allowed)) or 'none'}")
            if "top_k" in parameters:
                Fields(parameters, "parameters.").get("top_k", (int,), low=1)
            for index, text in enumerate(inputs):
                served.check_length(served.encode(text), 0, f"inputs[{index}]")
            results, _ = await run_encoder(request, served, task, inputs, parameters)
        else:
            params = Fields(parameters, "parameters.")
            do_sample = params.get("do_sample", (bool,), False)  # pipelines are greedy unless asked to sample
            prefix = params.get("prefix", (str,), "")
            prompts = [served.encode(prefix + t) for t in inputs]
            settings = sampling(params, default_max_tokens=served.default_new_tokens(max(len(ids) for ids in prompts), PIPELINES[task].default_new_tokens))
            if not do_sample:
                settings.temperature = 0
            for index, ids in enumerate(prompts):
                served.check_length(ids, settings.max_tokens, f"inputs[{index}]")
            outputs = await collect(request.is_disconnected, submit(served, prompts, settings), len(prompts))
            results = [PIPELINES[task].result(task, t, o["text"]) for t, o in zip(inputs, outputs)]
        return results[0] if single else results

    return app
