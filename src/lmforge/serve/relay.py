"""From the engine thread to the event loop and the client: events relayed into an asyncio queue, gathered
into one answer, or sent as OpenAI's server-sent events."""

import asyncio
import json

from .errors import ApiError


def sse(data) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False) if not isinstance(data, str) else data}\n\n"


class Relay:
    """Events from the engine thread into the event loop: one asyncio queue for a group of requests."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.requests: list = []  # GenerationRequests or EncoderJobs, each with cancel()

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


def usage(prompts: list[list[int]], completion: int) -> dict:
    prompt = sum(len(p) for p in prompts)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def collect(is_disconnected, relay: Relay, count: int) -> list[dict]:
    """Wait for every request of `relay`; cancel them all if the client goes away. -> per prompt
    {"text", "tokens", "finish_reason"}."""
    results = [{"text": "", "tokens": 0, "finish_reason": None} for _ in range(count)]
    pending = count
    try:
        while pending:
            try:
                index, event = await asyncio.wait_for(relay.queue.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if await is_disconnected():
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


def sse_events(relay: Relay, count: int, chunk, prompts: list[list[int]], include_usage: bool, head: dict,
               keepalive_seconds: float, first_delta=None):
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
                    index, event = await asyncio.wait_for(relay.queue.get(), timeout=keepalive_seconds)
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

    return events()


