"""The continuous-batching engine in process: staggered requests give exactly sequential `generate`'s tokens."""

import threading
import time

import pytest
import torch

import lmforge
from lmforge.models.heads import LMHead
from lmforge.nn.decoding_linear import DecodingCopies, DecodingLinear, packing_available
from lmforge.serve.batch import MAX_RESERVE, RunningBatch
from lmforge.serve.engine import BURST_CHUNKS, Engine, Event, GenerationRequest, Sampling
from lmforge.serve.metrics import Metrics
from lmforge.serve.text import PROMPT_CONTEXT, TextStream

from serve_helpers import tiny_checkpoints


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return tiny_checkpoints(tmp_path_factory.mktemp("serve_engine"))


class Collector:
    """Receives one request's events; records the token ids through the request's text stream."""

    def __init__(self):
        self.events: list[Event] = []
        self.done = threading.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if event.kind in ("done", "error"):
            self.done.set()


def prompts_for(model, count: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    low = 3  # keep clear of the special ids at the start of the vocabulary
    return [torch.randint(low, model.config.vocab_size, (int(length),), generator=generator).tolist()
            for length in torch.randint(1, 20, (count,), generator=generator)]


@pytest.mark.parametrize("name, prefill_chunk", [("gpt", 4), ("gpt", 64), ("bart", 4), ("t5", 4)])
def test_staggered_greedy_requests_match_sequential_generate(checkpoints, name, prefill_chunk):
    """prefill_chunk 4: most prompts are fed alone in chunks; 64: waiting prompts of different lengths
    are prefilled together, left-padded, and join the batch at once."""
    model = lmforge.load(checkpoints[name])
    model.config.eos_token_id = None  # run every request to max_tokens, so rows leave at different steps
    prompts = prompts_for(model, 8)
    max_tokens = [5 + 3 * i for i in range(8)]
    expected = []
    for prompt, new in zip(prompts, max_tokens):
        out = model.generate(torch.tensor([prompt]), max_new_tokens=new)[0].tolist()
        expected.append(out[len(prompt):] if not model.config.is_encoder_decoder else out[1:])

    engine = Engine(model, name, Metrics(), max_batch=8, prefill_chunk=prefill_chunk)
    got = [[] for _ in prompts]
    collectors = []
    original_emit = engine._emit

    def recording_emit(request, token):  # the exact ids, beside the text the client would see
        got[request.index].append(token)
        return original_emit(request, token)

    engine._emit = recording_emit
    groups = []  # sizes of the prompt groups prefilled together
    original_together = engine._prefill_together

    def recording_together(group, width):
        groups.append(len(group))
        return original_together(group, width)

    engine._prefill_together = recording_together
    for index, (prompt, new) in enumerate(zip(prompts, max_tokens)):
        if index == 4:
            engine.start()  # the first four wait together; the others join a batch that is already decoding
        collector = Collector()
        request = GenerationRequest(prompt, Sampling(max_tokens=new, temperature=0), collector)
        request.index = index
        engine.submit(request)
        collectors.append(collector)
        if index >= 4:
            time.sleep(0.01 * (index % 3))  # staggered
    for collector in collectors:
        assert collector.done.wait(60)
        assert collector.events[-1].kind == "done" and collector.events[-1].finish_reason == "length"
    engine.shutdown()
    assert got == expected
    if prefill_chunk > max(len(p) for p in prompts[:2]) * 2 and not model.config.is_encoder_decoder:
        assert max(groups) > 1  # prompts of different lengths were prefilled together, left-padded
    assert max(engine.metrics.histograms["time_to_first_token_seconds"][-1:]) == 8


def test_a_burst_beside_a_decoding_row_is_prefilled_in_one_turn_and_matches_generate(checkpoints):
    """prefill_chunk 8: six short prompts arriving while one row decodes outnumber the decoding rows, so they are
    prefilled together in one turn (not 8 tokens a turn); each joins the running batch before its first token is
    sent; requests that end at their first token (max_tokens 1) leave again; every request gets exactly
    sequential `generate`'s tokens (fp32). The engine is driven turn by turn in this thread."""
    from lmforge.infer.generate import eval_mode

    model = lmforge.load(checkpoints["gpt"])
    model.config.eos_token_id = None  # run every request to max_tokens
    generator = torch.Generator().manual_seed(2)
    prompts = [torch.randint(3, model.config.vocab_size, (length,), generator=generator).tolist()
               for length in (5, 3, 5, 2, 4, 4, 5)]
    max_tokens = [12, 6, 1, 9, 4, 1, 7]
    expected = [model.generate(torch.tensor([p]), max_new_tokens=n)[0, len(p):].tolist()
                for p, n in zip(prompts, max_tokens)]

    engine = Engine(model, "gpt", Metrics(), max_batch=8, prefill_chunk=8)
    got = [[] for _ in prompts]
    joined_before_first = []
    original_emit, original_together = engine._emit, engine._prefill_together
    groups = []

    def recording_emit(request, token):
        if not got[request.index]:
            joined_before_first.append(request in engine.batch.rows)
        got[request.index].append(token)
        return original_emit(request, token)

    def recording_together(group, width):
        groups.append(len(group))
        return original_together(group, width)

    engine._emit, engine._prefill_together = recording_emit, recording_together
    collectors = [Collector() for _ in prompts]
    requests = []
    for index, (prompt, new, collector) in enumerate(zip(prompts, max_tokens, collectors)):
        request = GenerationRequest(prompt, Sampling(max_tokens=new, temperature=0), collector)
        request.index = index
        requests.append(request)
    with eval_mode(model), torch.inference_mode():
        engine.waiting.append(requests[0])
        engine._turn()  # the first request is prefilled alone and decodes
        assert len(engine.batch) == 1 and groups == [1]
        engine.waiting.extend(requests[1:])
        engine._turn()
        assert groups == [1, 6]  # the burst in one turn: 6 prompts, 5 wide, 30 tokens > prefill_chunk
        assert len(engine.batch) == 1 + 6 - 2  # the two max_tokens-1 requests have left
        while not engine.idle:
            engine._turn()
    assert joined_before_first == [True] * len(prompts)
    assert got == expected
    engine.prefilling = requests * 3  # 21 prompts, no row decoding: a turn's budget stops at BURST_CHUNKS chunks
    assert engine._prefill_budget() == 8 * BURST_CHUNKS
    for collector, new in zip(collectors, max_tokens):
        assert collector.events[-1].kind == "done" and collector.events[-1].finish_reason == "length"
        assert collector.events[-1].tokens == new


@pytest.mark.parametrize("name", ["gpt", "t5", "mlm"])
def test_engine_makes_the_decoding_copies_before_it_is_ready(checkpoints, name):
    """The first batched step must not pack every matrix while streams wait: the engine makes the layouts of
    one row and of several rows at start (generative heads only; an encoder's products stay plain)."""
    model = lmforge.load(checkpoints[name])
    engine = Engine(model, name, Metrics())
    engine.start()
    assert engine.ready.wait(60)
    engine.shutdown()
    projections = [m for m in model.modules() if isinstance(m, DecodingLinear)]
    assert projections
    made = [set(m._decoding._copies) for m in projections]
    head = set(getattr(model.head, "_decoding", DecodingCopies())._copies)
    if not isinstance(model.head, LMHead):
        assert made == [set()] * len(projections) and head == set()
        return
    assert head == ({"transposed", "packed"} if packing_available() else {"transposed"})
    if packing_available():
        for block in model.decoder.blocks:  # the decoder-only stack, or an encoder-decoder's decoder
            assert "packed" in block.self_attn.q._decoding._copies


@pytest.mark.parametrize("leaving", ["longest", "first"])
def test_running_batch_rows_join_and_leave_without_changing_others(checkpoints, leaving):
    """Direct: logits of a row are the same alone and in a batch with rows of other lengths (fp32), before and
    after another row leaves (the longest: the cache drops its leading columns; the first: every row moves)
    and joins again (the longest: into a new cache; the first: into the row it left)."""
    model = lmforge.load(checkpoints["gpt"]).eval()
    prompts = prompts_for(model, 4)

    def prefilled(prompt):
        cache = model.new_cache(1, len(prompt))
        model(torch.tensor([prompt]), cache=cache)
        return cache

    with torch.inference_mode():
        alone = []  # per prompt: logits of its first and second step, decoding alone
        for prompt in prompts:
            batch = RunningBatch(model)
            batch.add(object(), prefilled(prompt))
            alone.append([batch.step(torch.tensor([token])) for token in (7, 9, 11)])
        batch = RunningBatch(model)
        for prompt in prompts:
            batch.add(object(), prefilled(prompt))
        together = batch.step(torch.tensor([7] * len(prompts)))
        torch.testing.assert_close(together, torch.cat([a[0] for a in alone]), atol=1e-5, rtol=1e-5)
        gone = max(range(len(prompts)), key=lambda i: len(prompts[i])) if leaving == "longest" else 0
        kept = [i for i in range(len(prompts)) if i != gone]
        batch.keep(kept)
        assert batch.length == max(len(prompts[i]) for i in kept) + 1
        after = batch.step(torch.tensor([9] * len(kept)))
        torch.testing.assert_close(after, torch.cat([alone[i][1] for i in kept]), atol=1e-5, rtol=1e-5)
        batch.add(object(), prefilled(prompts[gone]))  # back again: into the free row (when not the longest)
        again = batch.step(torch.tensor([11] * len(kept) + [7]))
        torch.testing.assert_close(again, torch.cat([alone[i][2] for i in kept] + [alone[gone][0]]),
                                   atol=1e-5, rtol=1e-5)


def test_running_batch_keeps_room_for_the_tokens_rows_will_add(checkpoints):
    """A joining row's max_tokens are set aside in the cache (up to MAX_RESERVE), so the cache does not grow
    (a copy of every row) while they decode."""
    model = lmforge.load(checkpoints["gpt"]).eval()
    prompt = prompts_for(model, 1)[0]
    with torch.inference_mode():
        batch = RunningBatch(model)
        cache = model.new_cache(1, len(prompt))
        model(torch.tensor([prompt]), cache=cache)
        batch.add(object(), cache, reserve=100)
        storage = batch.cache.keys.untyped_storage().data_ptr()
        for _ in range(100):
            batch.step(torch.tensor([7]))
        assert batch.cache.keys.untyped_storage().data_ptr() == storage  # never grown
        assert batch.cache.max_len == len(prompt) + 100
        cache = model.new_cache(1, len(prompt))
        model(torch.tensor([prompt]), cache=cache)
        batch = RunningBatch(model)
        batch.add(object(), cache, reserve=10**6)
        assert batch.cache.max_len == len(prompt) + MAX_RESERVE


def test_text_stream_never_splits_a_character_nor_shows_a_stop_string(checkpoints):
    tokenizer = lmforge.load(checkpoints["gpt"]).tokenizer
    text = "café 🙂 déjà"  # the emoji is unseen: four byte tokens
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # some character spans tokens
    stream = TextStream(tokenizer.decode, [], [])
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)

    decoded = []  # how many ids each decode call reads

    def counting_decode(ids):
        decoded.append(len(ids))
        return tokenizer.decode(ids)

    prompt = tokenizer.encode("the cat sat on the mat and", add_special_tokens=False)
    long_ids = (ids + tokenizer.encode(" the cat sat on the mat,", add_special_tokens=False)) * 20
    stream = TextStream(counting_decode, prompt, [])
    pieces = [stream.push(i) for i in long_ids] + [stream.flush()]
    context = prompt[-PROMPT_CONTEXT:]
    assert "".join(pieces) == tokenizer.decode(context + long_ids)[len(tokenizer.decode(context)):]
    assert max(decoded) <= PROMPT_CONTEXT + 4  # a token decodes a few ids of context, not the whole text so far

    stream = TextStream(tokenizer.decode, [], ["🙂 d"])
    pieces = [stream.push(i) for i in ids]
    assert stream.stopped and "".join(pieces) + stream.flush() == "café "


def test_chat_template_of_the_checkpoint_without_a_doubled_bos(checkpoints, tmp_path):
    import json
    import shutil

    from lmforge.serve.models import ServedModel

    folder = tmp_path / "chat"
    shutil.copytree(checkpoints["gpt"], folder)
    template = "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}<assistant>"
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    served = ServedModel("chat", folder, Metrics())
    tokenizer = served.model.tokenizer
    messages = [{"role": "user", "content": "the cat"}]
    ids = served.chat_prompt(messages)
    assert ids == tokenizer.encode(f"{tokenizer.id_to_token(tokenizer.bos_id)}<user>the cat\n<assistant>",
                                   add_special_tokens=False)
    assert ids.count(tokenizer.bos_id) == 1
    plain = ServedModel("plain", checkpoints["gpt"], Metrics())  # no template: a plain transcript
    assert plain.chat.render(messages) == "user: the cat\nassistant:"
