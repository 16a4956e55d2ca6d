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

from .engine import EncoderJob, Event, GenerationRequest, QueueFull, ShuttingDown
from .errors import ApiError, bad_field, queue_full, unavailable
from .metrics import Metrics
from .models import ENCODER_TASKS, GENERATION_TASKS, ServedModel
from .protocol import Fields, messages, parse_json, sampling, stream_settings

PLAYGROUND = Path(__file__).with_name("playground.html")
TEXT2TEXT_KEYS = {"translation": "translation_text", "summarization": "summary_text", "text2text": "generated_text"}


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


def sse(data) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False) if not isinstance(data, str) else data}\n\n"


class Relay:
    """Events from the engine thread into the event loop: one asyncio queue for a group of requests."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.requests: list[GenerationRequest | EncoderJob] = []

    def sink(self, index: int):
        def put(event) -> None:
            try:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass
        return put

    def cancel(self) -> None:
        for request in self.requests:
            request.cancel()


def build_app(state: ServerState):
    """The FastAPI application for `state`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse

    app = FastAPI(title="lmforge serve", docs_url=None, redoc_url=None, openapi_url=None)

    def error_response(error: ApiError) -> JSONResponse:
        state.metrics.count("errors", 1, f'code="{error.code}"')
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """API key, body size and draining, before any route runs; ApiErrors become OpenAI-shaped JSON."""
        path = request.url.path
        try:
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
            return await call_next(request)
        except ApiError as error:
            return error_response(error)

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
    def check_length(served: ServedModel, ids: list[int], max_tokens: int, param: str) -> None:
        limit = served.context_length
        if not ids:
            raise bad_field(param, f"'{param}' is empty; give at least one token of text")
        seq2seq = served.model.config.is_encoder_decoder
        needed = max_tokens + (1 if seq2seq else len(ids))
        if len(ids) > limit or (served.model.config.positions_bounded and needed > limit):
            where = f"{len(ids)} in the prompt, {max_tokens} in the completion"
            raise ApiError(400, f"this model's maximum context length is {limit} tokens, but {where} were "
                           f"requested; shorten the prompt or lower max_tokens", param=param,
                           code="context_length_exceeded")

    def default_new_tokens(served: ServedModel, prompt_len: int, most: int) -> int:
        """`most` new tokens, or as many as the context leaves after the prompt (at least 1)."""
        room = served.context_length - (1 if served.model.config.is_encoder_decoder else prompt_len)
        return max(1, min(most, room))

    def needs_generation(served: ServedModel, endpoint: str) -> None:
        if not served.generates:
            raise ApiError(400, f"model {served.name!r} has a {served.model.task} head and cannot generate text "
                           f"({endpoint}); it can serve: {', '.join(served.tasks)}", param="model",
                           code="unsupported_task")

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

    async def collect(request: Request, relay: Relay, count: int) -> list[dict]:
        """Wait for every request of `relay`; cancel them all if the client goes away. -> per prompt
        {"text", "tokens", "finish_reason"}."""
        results = [{"text": "", "tokens": 0, "finish_reason": None} for _ in range(count)]
        pending = count
        try:
            while pending:
                try:
                    index, event = await asyncio.wait_for(relay.queue.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        relay.cancel()
                        raise ApiError(499, "the client closed the request", code="client_closed")
                    continue
                if event.kind == "error":
                    relay.cancel()
                    raise ApiError(500, event.message, type="server_error", code="generation_failed")
                results[index]["text"] += event.text
                results[index]["tokens"] = event.tokens
                if event.kind == "done":
                    results[index]["finish_reason"] = event.finish_reason
                    pending -= 1
        except asyncio.CancelledError:
            relay.cancel()
            raise
        return results

    def usage(prompts: list[list[int]], completion: int) -> dict:
        prompt = sum(len(p) for p in prompts)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def stream_response(relay: Relay, count: int, chunk, prompts: list[list[int]], include_usage: bool,
                        head: dict, first_delta=None) -> StreamingResponse:
        """Server-sent events: a chunk per text piece, a final chunk with finish_reason per prompt, the usage
        chunk when asked, then [DONE]; errors after the headers go into the stream."""

        async def events():
            pending, tokens = count, [0] * count
            try:
                if first_delta is not None:
                    for index in range(count):
                        yield sse({**head, "choices": [first_delta(index)]})
                while pending:
                    try:
                        index, event = await asyncio.wait_for(relay.queue.get(), timeout=state.keepalive_seconds)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if event.kind == "error":
                        relay.cancel()
                        yield sse(ApiError(500, event.message, type="server_error", code="generation_failed").body())
                        break
                    tokens[index] = event.tokens
                    if event.kind == "text":
                        yield sse({**head, "choices": [chunk(index, event.text, None)]})
                    else:
                        yield sse({**head, "choices": [chunk(index, "", event.finish_reason)]})
                        pending -= 1
                if include_usage and not pending:
                    yield sse({**head, "choices": [], "usage": usage(prompts, sum(tokens))})
                yield sse("[DONE]")
            finally:  # normal end, or the client went away (the generator is closed): free the slots
                relay.cancel()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def completion_prompts(served: ServedModel, fields: Fields) -> list[list[int]]:
        prompt = fields.body.get("prompt")
        if isinstance(prompt, str):
            return [served.encode(prompt)]
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            vocab = served.model.config.vocab_size
            if not all(0 <= t < vocab for t in prompt):
                raise bad_field("prompt", f"'prompt' holds token ids outside the vocabulary (0..{vocab - 1})")
            return [prompt]
        if isinstance(prompt, list) and prompt and all(isinstance(t, str) for t in prompt):
            return [served.encode(p) for p in prompt]
        raise bad_field("prompt", "'prompt' must be a string, a list of strings or a list of token ids")

    @app.post("/v1/completions")
    async def completions(request: Request):
        fields = Fields(await body_of(request))
        served = state.model(fields.get("model", (str,), None))
        needs_generation(served, "/v1/completions")
        prompts = completion_prompts(served, fields)
        settings = sampling(fields, default_max_tokens=default_new_tokens(served, max(map(len, prompts)), 16))
        stream, include_usage = stream_settings(fields)
        for ids in prompts:
            check_length(served, ids, settings.max_tokens, "prompt")
        echo = fields.get("echo", (bool,), False)
        relay = submit(served, prompts, settings)
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": served.name}
        if stream:
            def chunk(index, text, finish):
                return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
            return stream_response(relay, len(prompts), chunk, prompts, include_usage, head)
        results = await collect(request, relay, len(prompts))
        texts = [(fields.body["prompt"] if echo and isinstance(fields.body["prompt"], str) else "") + r["text"]
                 for r in results]
        return {**head, "choices": [{"index": i, "text": t, "logprobs": None, "finish_reason": r["finish_reason"]}
                                    for i, (t, r) in enumerate(zip(texts, results))],
                "usage": usage(prompts, sum(r["tokens"] for r in results))}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        fields = Fields(await body_of(request))
        served = state.model(fields.get("model", (str,), None))
        needs_generation(served, "/v1/chat/completions")
        conversation = messages(fields)
        ids = served.chat_prompt(conversation)
        settings = sampling(fields, default_max_tokens=default_new_tokens(served, len(ids), 256))
        stream, include_usage = stream_settings(fields)
        check_length(served, ids, settings.max_tokens, "messages")
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
        result = (await collect(request, relay, 1))[0]
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
        if "feature-extraction" not in served.pipelines:
            raise ApiError(400, f"model {served.name!r} does not serve embeddings (feature-extraction); it can "
                           f"serve: {', '.join(served.tasks)}", param="model", code="unsupported_task")
        texts = fields.strings("input")
        encoding = fields.get("encoding_format", (str,), "float")
        if encoding not in ("float", "base64"):
            raise bad_field("encoding_format", f"'encoding_format' must be 'float' or 'base64', got {encoding!r}")
        for index, text in enumerate(texts):
            check_length(served, served.encode(text) or [0], 0, f"input[{index}]")
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
            allowed = {"fill-mask": {"top_k"}, "text-classification": {"top_k"}}.get(task, set())
            unknown = sorted(set(parameters) - allowed)
            if unknown:
                raise bad_field(f"parameters.{unknown[0]}", f"unknown parameter {unknown[0]!r} for {task}; "
                                f"allowed: {', '.join(sorted(allowed)) or 'none'}")
            if "top_k" in parameters:
                Fields(parameters, "parameters.").get("top_k", (int,), low=1)
            for index, text in enumerate(inputs):
                check_length(served, served.encode(text), 0, f"inputs[{index}]")
            results, _ = await run_encoder(request, served, task, inputs, parameters)
        else:
            params = Fields(parameters, "parameters.")
            do_sample = params.get("do_sample", (bool,), False)  # pipelines are greedy unless asked to sample
            prefix = params.get("prefix", (str,), "")
            prompts = [served.encode(prefix + t) for t in inputs]
            settings = sampling(params, default_max_tokens=default_new_tokens(
                served, max(len(ids) for ids in prompts), 20 if task == "text-generation" else 64))
            if not do_sample:
                settings.temperature = 0
            for index, ids in enumerate(prompts):
                check_length(served, ids, settings.max_tokens, f"inputs[{index}]")
            outputs = await collect(request, submit(served, prompts, settings), len(prompts))
            if task == "text-generation":
                results = [{"generated_text": t + o["text"]} for t, o in zip(inputs, outputs)]
            else:
                results = [{TEXT2TEXT_KEYS[task]: o["text"].strip()} for o in outputs]
        return results[0] if single else results

    return app
