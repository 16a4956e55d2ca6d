"""One engine thread per model: it owns torch, the HTTP side only queues work and reads events.

The scheduler is a small loop (admit, prefill, decode, evict), as in vLLM and TGI:
- generation requests wait in a bounded queue; a waiting request is admitted while the running batch
  has room and is prefilled within `prefill_chunk` prompt tokens per loop turn, so the rows already
  decoding get a step between chunks: a decoder's fresh prompts that fit together are prefilled in one
  batched forward (left-padded) and join at once, a longer prompt is fed alone chunk by chunk. A burst
  of prompts that outnumbers the rows decoding may take more per turn (see `_prefill_budget`);
- a prefilled row joins the running batch (`RunningBatch`) before its first token is sent (the copy into
  the batch's cache counts in its time to first token, not in its first gap); the batch feeds one token to
  every row per step; a row leaves as soon as it finishes or its client has gone, the others are never
  recomputed;
- encoder work (embeddings, fill-mask, classification, tagging) is micro-batched by token count
  between decoding steps.
Every request gets its own sampling settings and random generator, so greedy output does not depend
on what else is in the batch.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..infer.generate import eval_mode
from ..infer.logits import apply_processors, build_processors
from ..infer.options import GenerationOptions
from ..infer.steppers import make_stepper
from ..models.heads import LMHead
from .batch import RunningBatch
from .metrics import Metrics
from .text import TextStream


BURST_CHUNKS = 4  # a turn prefills at most this many times `prefill_chunk` tokens (see `Engine._prefill_budget`)


class QueueFull(Exception):
    """The model's queue is full; the client should retry later."""


class ShuttingDown(Exception):
    """The server is draining and admits no new work."""


@dataclass
class Sampling:
    """Per-request decoding settings (already validated by the HTTP layer)."""

    max_tokens: int = 16
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False  # run to max_tokens even past the end-of-sequence token (benchmarks)

    def options(self) -> GenerationOptions:
        greedy = self.temperature == 0
        return GenerationOptions.make(max_new_tokens=self.max_tokens, do_sample=not greedy,
                                      temperature=1.0 if greedy else self.temperature, top_k=self.top_k,
                                      top_p=self.top_p, seed=self.seed, stop_token_ids=self.stop_token_ids)


@dataclass
class Event:
    """What the engine tells the HTTP side: kind is "text", "done" or "error"."""

    kind: str
    text: str = ""
    tokens: int = 0  # new tokens so far
    finish_reason: str | None = None
    message: str = ""


class GenerationRequest:
    """A prompt (decoder) or source (encoder-decoder) and how to continue it; `sink` receives Events
    from the engine thread; `cancel()` (from any thread) frees its slot at the next step."""

    def __init__(self, ids: list[int], sampling: Sampling, sink: Callable[[Event], None]):
        self.ids, self.sampling, self.sink = ids, sampling, sink
        self.cancelled = False
        self.arrived = time.monotonic()
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        # set by the engine
        self.cache = None
        self.prefilled = 0
        self.next_token: int | None = None
        self.new_tokens = 0
        self.text: TextStream | None = None
        self.processors = []
        self.generator: torch.Generator | None = None
        self.stop_ids: set[int] = set()

    @property
    def tokens_left(self) -> int:
        """New tokens it may still produce before `max_tokens` ends it."""
        return self.sampling.max_tokens - self.new_tokens

    def cancel(self) -> None:
        self.cancelled = True


class EncoderJob:
    """Texts for an encoder pipeline; `done(result | None, error | None)` is called from the engine thread."""

    def __init__(self, key: str, texts: list[str], n_tokens: int, run: Callable[[list[str]], list], done: Callable):
        self.key = key  # jobs with the same key (pipeline and parameters) may share one call
        self.texts, self.n_tokens, self.run, self.done = texts, n_tokens, run, done
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Engine:
    """Schedules one model's work on its own thread. `submit`/`submit_encoder` are called from the HTTP side."""

    def __init__(self, model, name: str, metrics: Metrics, max_batch: int = 16, max_queue: int = 64,
                 prefill_chunk: int = 128, encoder_tokens: int = 2048):
        self.model, self.name, self.metrics = model, name, metrics
        self.max_batch, self.max_queue = max_batch, max_queue
        self.prefill_chunk, self.encoder_tokens = prefill_chunk, encoder_tokens
        self.is_seq2seq = model.config.is_encoder_decoder
        self.eos = model.config.eos_token_id
        self.waiting: collections.deque[GenerationRequest] = collections.deque()
        self.encoder_jobs: collections.deque[EncoderJob] = collections.deque()
        self.prefilling: list[GenerationRequest] = []
        self.batch = RunningBatch(model)
        self.wake = threading.Condition()
        self.accepting = True
        self.stopped = False
        self.stop_message = "the server is shutting down"
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)

    # ---- HTTP side ---------------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def submit(self, request: GenerationRequest) -> None:
        """Queue a generation; `QueueFull` / `ShuttingDown` when it cannot be taken."""
        self._enqueue(self.waiting, request)

    def submit_encoder(self, job: EncoderJob) -> None:
        self._enqueue(self.encoder_jobs, job)

    def _enqueue(self, queue: collections.deque, item) -> None:
        with self.wake:
            if not self.accepting:
                raise ShuttingDown()
            if len(self.waiting) + len(self.encoder_jobs) >= self.max_queue:
                raise QueueFull()
            queue.append(item)
            self.wake.notify()

    @property
    def queue_depth(self) -> int:
        return len(self.waiting) + len(self.encoder_jobs)

    @property
    def running(self) -> int:
        return len(self.batch) + len(self.prefilling)

    @property
    def idle(self) -> bool:
        return not (self.waiting or self.encoder_jobs or self.prefilling or len(self.batch))

    def stop_admitting(self) -> None:
        with self.wake:
            self.accepting = False

    def shutdown(self, message: str = "the server is shutting down") -> None:
        """Fail what is still queued or running with `message` and end the thread."""
        with self.wake:
            self.accepting = False
            self.stopped = True
            self.stop_message = message
            self.wake.notify()
        self.thread.join(timeout=10)

    # ---- engine thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        with eval_mode(self.model), torch.inference_mode():
            self.metrics.set_engine(self.name, 0, 0, 0)
            self._warm_up()
            self.ready.set()
            while True:
                with self.wake:
                    while self.idle and not self.stopped:
                        self.wake.wait(timeout=0.5)
                    if self.stopped:
                        break
                self._turn()
                self.metrics.set_engine(self.name, self.queue_depth, self.running, self.batch.cache_bytes())
        self._fail_everything(self.stop_message)

    def _warm_up(self) -> None:
        """Make the matrices' decoding copies (`nn.decoding_linear`, `models.cpu_decoding`) before the first
        request: one decoding step of 1, of 2 and of `max_batch` rows. Otherwise the first step of a batch of several
        rows would pack every matrix (seconds at gpt2 size) while its streams wait, and the first step of a full
        batch would set up oneDNN's kernels for that many rows (~1 ms per matrix shape)."""
        if not isinstance(self.model.head, LMHead):
            return
        for rows in sorted({1, 2, self.max_batch}):
            ids = torch.zeros(rows, 1, dtype=torch.long, device=self.model.device)  # (rows, 1)
            stepper = make_stepper(self.model, ids, None, 1)
            stepper.step(stepper.prefill().argmax(dim=-1))

    def _turn(self) -> None:
        """One loop turn: drop cancelled work, admit, one micro-batch of encoder jobs, one turn's prefill,
        one decoding step."""
        self._drop_cancelled()
        self._admit()
        if self.encoder_jobs:
            self._run_encoder_jobs()
        if self.prefilling:
            self._prefill()
        if len(self.batch):
            self._decode_step()

    def _guarded(self, request: GenerationRequest, work: Callable[[], None]) -> bool:
        """Run `work` for one request; an unexpected error fails that request only. True when it ran."""
        try:
            work()
            return True
        except Exception as error:  # noqa: BLE001 - reported to the client, the engine keeps serving
            request.sink(Event("error", message=f"generation failed: {error}"))
            request.cancelled = True
            return False

    def _drop_cancelled(self) -> None:
        with self.wake:
            self.waiting = collections.deque(r for r in self.waiting if not r.cancelled)
            self.encoder_jobs = collections.deque(j for j in self.encoder_jobs if not j.cancelled)
        self.prefilling = [r for r in self.prefilling if not r.cancelled]
        gone = [i for i, r in enumerate(self.batch.rows) if r.cancelled]
        if gone:
            self.batch.keep([i for i in range(len(self.batch)) if i not in gone])
            self.metrics.count("cancelled", len(gone))

    def _admit(self) -> None:
        while self.waiting and self.running < self.max_batch:
            with self.wake:
                request = self.waiting.popleft()
            self._guarded(request, lambda: self._start(request))
            if not request.cancelled:
                self.prefilling.append(request)

    def _start(self, request: GenerationRequest) -> None:
        sampling = request.sampling
        options = sampling.options()
        request.stop_ids = set(options.stop_ids(None if sampling.ignore_eos else self.eos))
        request.processors = build_processors(options, len(request.stop_ids))
        if options.do_sample:
            request.generator = torch.Generator(device=self.model.device)
            request.generator.manual_seed(sampling.seed if sampling.seed is not None else int(torch.seed() % 2**63))
        tokenizer = self.model.tokenizer
        prompt = [] if self.is_seq2seq else request.ids
        request.text = TextStream(tokenizer.decode, prompt, sampling.stop)

    def _prefill(self) -> None:
        """This turn's prompt work, at most `prefill_chunk` tokens: the next chunk of a prompt already
        started or too long for one turn (and every encoder-decoder source), or else, for decoders, the
        waiting prompts that fit in the budget together, left-padded to the longest, in one forward pass."""
        first = self.prefilling[0]
        if self.is_seq2seq or first.prefilled or len(first.ids) > self.prefill_chunk:
            self._prefill_chunk(first)
            return
        group, width, budget = [], 0, self._prefill_budget()
        for request in self.prefilling:
            wider = max(width, len(request.ids))
            if request.prefilled or len(request.ids) > self.prefill_chunk or wider * (len(group) + 1) > budget:
                break
            group.append(request)
            width = wider
        self._prefill_together(group, width)

    def _prefill_budget(self) -> int:
        """Prompt tokens (padding included) this turn may prefill together: `prefill_chunk`, times the number of
        admitted prompts per decoding row when they outnumber the rows, up to BURST_CHUNKS chunks. Every decoding
        row waits for a turn's prefill, so a burst of short prompts beside a few running rows is prefilled at
        once: those rows are held up once instead of over several turns, and the burst's requests start sooner.
        Prompts that trickle in beside a full batch still go `prefill_chunk` tokens a turn."""
        return self.prefill_chunk * min(BURST_CHUNKS, max(1, len(self.prefilling) // max(1, len(self.batch))))

    def _prefill_together(self, group: list[GenerationRequest], width: int) -> None:
        """Prefill whole decoder prompts as one left-padded batch; let them join the running batch with their
        rows of the cache and hand them their first tokens (`_join_then_emit`)."""
        device = self.model.device
        ids = torch.zeros(len(group), width, dtype=torch.long, device=device)  # (n, width)
        mask = torch.zeros_like(ids)
        for row, request in enumerate(group):
            ids[row, width - len(request.ids):] = torch.tensor(request.ids, dtype=torch.long)
            mask[row, width - len(request.ids):] = 1
        for request in group:
            self.prefilling.remove(request)
        try:
            cache = self.model.new_cache(len(group), width)
            padded = None if bool(mask.all()) else mask
            logits = self.model(ids, attention_mask=padded, cache=cache, last_only=True).logits[:, -1].float()
        except Exception as error:  # noqa: BLE001 - reported to these clients, the engine keeps serving
            for request in group:
                request.sink(Event("error", message=f"generation failed: {error}"))
                request.cancelled = True
            return
        for request in group:
            request.prefilled = len(request.ids)
        self.metrics.count("prompt_tokens", sum(len(request.ids) for request in group))
        picked = self._pick(group, logits)
        # after their first token they may add tokens_left - 1 more
        self._join_then_emit(group, picked, lambda: self.batch.join(group, cache, mask,
                                                                    reserve=max(r.tokens_left for r in group) - 1))

    def _prefill_chunk(self, request: GenerationRequest) -> None:
        """Feed the next `prefill_chunk` prompt tokens; on the last chunk pick the first token and join the batch."""
        model, device = self.model, self.model.device

        def work() -> None:
            if request.cache is None:
                request.cache = model.new_cache(1, 1 if self.is_seq2seq else len(request.ids))
            if self.is_seq2seq:
                source = torch.tensor([request.ids], dtype=torch.long, device=device)  # (1, S)
                encoded = model.encode(source)  # the encoder runs once, whole
                start = torch.tensor([[model.decoder_start_id]], dtype=torch.long, device=device)
                logits = model(encoder_hidden_states=encoded, decoder_input_ids=start, cache=request.cache,
                               last_only=True).logits[:, -1].float()
                request.prefilled = len(request.ids)
            else:
                end = min(len(request.ids), request.prefilled + self.prefill_chunk)
                chunk = torch.tensor([request.ids[request.prefilled:end]], dtype=torch.long, device=device)
                logits = model(chunk, cache=request.cache, last_only=True).logits[:, -1].float()  # (1, V)
                request.prefilled = end
            if request.prefilled == len(request.ids):
                self.prefilling.remove(request)
                self.metrics.count("prompt_tokens", len(request.ids))
                cache, request.cache = request.cache, None
                self._join_then_emit([request], self._pick([request], logits),
                                     lambda: self.batch.add(request, cache, reserve=request.tokens_left - 1))

        if not self._guarded(request, work) and request in self.prefilling:
            self.prefilling.remove(request)

    def _join_then_emit(self, group: list[GenerationRequest], picked: list[int], join: Callable[[], None]) -> None:
        """Let freshly prefilled `group` join the running batch (`join()` adds their rows at its end), then hand
        each its first token `picked[i]`; those finished by it (a stop, max_tokens 1, a client gone) leave again.
        Joining first puts the copy into the batch's cache before the first token, so the gap to the second
        token is one decoding step, like every later one."""
        join()
        start = len(self.batch) - len(group)
        finished = {start + i for i, request in enumerate(group) if not self._emit(request, picked[i])}
        if finished:
            self.batch.keep([row for row in range(len(self.batch)) if row not in finished])

    def _decode_step(self) -> None:
        rows = self.batch.rows
        tokens = torch.tensor([r.next_token for r in rows], dtype=torch.long, device=self.model.device)
        try:
            logits = self.batch.step(tokens)  # (B, V)
        except Exception as error:  # noqa: BLE001 - fail the batch's requests, keep the engine
            for request in rows:
                request.sink(Event("error", message=f"generation failed: {error}"))
            self.batch.keep([])
            return
        picked = self._pick(rows, logits)
        keep = [i for i, request in enumerate(rows) if self._emit(request, int(picked[i]))]
        if len(keep) < len(rows):
            self.batch.keep(keep)

    def _pick(self, rows: list[GenerationRequest], logits: torch.Tensor) -> list[int]:
        """Next token per row: argmax for greedy rows; each sampling row through its own processors and generator."""
        picked = logits.argmax(dim=-1).tolist()  # (B,)
        for i, request in enumerate(rows):
            if request.generator is None:
                continue
            scores = apply_processors(request.processors, None, logits[i:i + 1])
            picked[i] = int(torch.multinomial(scores.softmax(-1), 1, generator=request.generator))
        return picked

    def _emit(self, request: GenerationRequest, token: int) -> bool:
        """Hand one new token to its request; False when the request is finished (it then leaves the batch)."""
        now = time.monotonic()
        if request.first_token_at is None:
            request.first_token_at = now
            self.metrics.observe("time_to_first_token_seconds", now - request.arrived)
        else:
            self.metrics.observe("inter_token_latency_seconds", now - request.last_token_at)
        request.last_token_at = now
        if request.cancelled:  # its client went away during this step
            self.metrics.count("cancelled", 1)
            return False
        finish = None
        if token in request.stop_ids:
            finish = "stop"
        else:
            request.new_tokens += 1
            self.metrics.count("generated_tokens", 1)
            piece = request.text.push(token)
            if piece:
                request.sink(Event("text", text=piece, tokens=request.new_tokens))
            if request.text.stopped:
                finish = "stop"
            elif request.tokens_left <= 0:
                finish = "length"
        if finish is None:
            request.next_token = token
            return True
        rest = request.text.flush()
        if rest:
            request.sink(Event("text", text=rest, tokens=request.new_tokens))
        request.sink(Event("done", tokens=request.new_tokens, finish_reason=finish))
        self.metrics.observe("request_seconds", now - request.arrived)
        return False

    def _run_encoder_jobs(self) -> None:
        """One micro-batch: queued jobs of the same pipeline up to `encoder_tokens` tokens, in one call."""
        with self.wake:
            first = self.encoder_jobs.popleft()
            jobs, budget = [first], self.encoder_tokens - first.n_tokens
            for job in list(self.encoder_jobs):
                if job.key == first.key and job.n_tokens <= budget:
                    jobs.append(job)
                    budget -= job.n_tokens
                    self.encoder_jobs.remove(job)
        texts = [t for job in jobs for t in job.texts]
        try:
            results = first.run(texts)
        except Exception as error:  # noqa: BLE001 - each job is answered with the error
            for job in jobs:
                job.done(None, error)
            return
        start = 0
        for job in jobs:
            job.done(results[start:start + len(job.texts)], None)
            start += len(job.texts)

    def _fail_everything(self, message: str) -> None:
        for request in list(self.waiting) + self.prefilling + list(self.batch.rows):
            request.sink(Event("error", message=message))
        for job in self.encoder_jobs:
            job.done(None, RuntimeError(message))
        self.waiting.clear()
        self.encoder_jobs.clear()
        self.prefilling = []
        self.batch.keep([])
