"""A real `lmforge serve` subprocess, spoken to with `requests` and the official `openai` client (the oracle
for the API's shapes): completions, chat, embeddings, pipelines, streaming, continuous batching, faults."""

import base64
import json
import struct
import threading
import time

import pytest
import requests

import lmforge
from serve_helpers import Server, tiny_checkpoints

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "sekret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return tiny_checkpoints(tmp_path_factory.mktemp("serve_http"))


@pytest.fixture(scope="module")
def server(checkpoints):
    names = ["bart", "t5", "mlm", "classifier", "tagger", "slow"]
    server = Server(str(checkpoints["gpt"]), *[f"--model={n}={checkpoints[n]}" for n in names],
                    "--api-key", KEY, "--max-batch", "8", "--max-body-bytes", "65536", "--prefill-chunk", "16")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def post(server, path, body, headers=AUTH, **kwargs):
    return requests.post(server.url + path, json=body, headers=headers, timeout=60, **kwargs)


def assert_error(response, status, code=None, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def expected_continuation(path, prompt, max_tokens):
    """Sequential greedy generation in this process, through lmforge's own pipeline."""
    generator = lmforge.pipeline("text-generation", model=path)
    return generator(prompt, max_new_tokens=max_tokens)["generated_text"][len(prompt):]


PROMPTS = ["the cat", "a good film with", "John Smith lives in", "the dog sat on the rug . the cat",
           "Mary", "café déjà", "New York . Paris . London", "the mat"]


# ---- the OpenAI client as the oracle -------------------------------------------------------------------------
def test_models_and_health(server, client):
    assert requests.get(server.url + "/health", timeout=5).json() == {"status": "ok"}  # no key needed
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"gpt", "bart", "t5", "mlm", "classifier", "tagger", "slow"}
    gpt = models["gpt"].model_dump()
    assert gpt["family"] == "decoder" and "text-generation" in gpt["tasks"] and gpt["context_length"] == 1024
    assert "fill-mask" in models["mlm"].model_dump()["tasks"]
    assert models["bart"].model_dump()["family"] == "encoder-decoder"


def test_completion_streamed_and_not_equal_sequential_generate(server, client, checkpoints):
    expected = expected_continuation(checkpoints["gpt"], "the cat", 12)
    whole = client.completions.create(model="gpt", prompt="the cat", max_tokens=12, temperature=0)
    assert whole.choices[0].text == expected
    assert whole.usage.completion_tokens <= 12 and whole.usage.prompt_tokens == len(
        lmforge.load(checkpoints["gpt"]).tokenizer.encode("the cat"))
    chunks = list(client.completions.create(model="gpt", prompt="the cat", max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(pieces) == expected  # so no chunk ended inside a character (see test_text_stream_*)
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens and not chunks[-1].choices


def test_raw_stream_format(server):
    response = post(server, "/v1/completions", {"model": "gpt", "prompt": "the cat", "max_tokens": 4,
                                                "temperature": 0, "stream": True, "ignore_eos": True}, stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    body = response.content.decode()
    events = [e for e in body.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    final = json.loads(events[-2][6:])
    assert final["choices"][0]["finish_reason"] == "length" and final["object"] == "text_completion"


def test_chat_completion_streamed_and_not(client):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the cat"}]
    whole = client.chat.completions.create(model="gpt", messages=messages, max_tokens=8, temperature=0)
    assert whole.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(model="gpt", messages=messages, max_tokens=8, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_embeddings_equal_the_pipeline(client, checkpoints):
    texts = ["the cat sat on the mat .", "a good film"]
    expected = lmforge.pipeline("feature-extraction", model=checkpoints["mlm"])(texts)
    default = client.embeddings.create(model="mlm", input=texts)  # the client asks for base64 and decodes it
    floats = client.embeddings.create(model="mlm", input=texts, encoding_format="float")
    packed = client.embeddings.create(model="mlm", input=texts, encoding_format="base64")
    for index, vector in enumerate(expected):
        assert default.data[index].embedding == pytest.approx(vector, abs=1e-5)
        assert floats.data[index].embedding == pytest.approx(vector, abs=1e-5)
        raw = base64.b64decode(packed.data[index].embedding)
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(vector, abs=1e-5)
    assert default.usage.prompt_tokens > 0


def assert_same_result(got, expected, where: str) -> None:
    """Equal structure, labels and tokens; scores and vectors equal to float32 rounding (the server batches
    requests with others, so sums may run in another order)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), (where, got, expected)
        for key in expected:
            assert_same_result(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), (where, got, expected)
        for index, (g, e) in enumerate(zip(got, expected)):
            assert_same_result(g, e, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-6), (where, got, expected)
    else:
        assert got == expected, (where, got, expected)


def test_pipelines_give_the_pipelines_results(server, checkpoints):
    cases = [("mlm", "fill-mask", "the cat [MASK] on the mat .", {"top_k": 3}),
             ("classifier", "text-classification", ["a good film", "a dull film"], {}),
             ("tagger", "token-classification", "John Smith lives in New York .", {}),
             ("mlm", "feature-extraction", "the cat", {})]
    for model, task, inputs, parameters in cases:
        response = post(server, f"/v1/pipelines/{task}", {"model": model, "inputs": inputs, "parameters": parameters})
        assert response.status_code == 200, response.text
        expected = lmforge.pipeline(task, model=checkpoints[model])(inputs, **parameters)
        assert_same_result(response.json(), json.loads(json.dumps(expected)), task)
    for model in ("bart", "t5"):
        got = post(server, "/v1/pipelines/translation", {"model": model, "inputs": ["the cat", "a good film"],
                                                          "parameters": {"max_new_tokens": 10}}).json()
        expected = lmforge.pipeline("translation", model=checkpoints[model])(["the cat", "a good film"],
                                                                             max_new_tokens=10)
        assert got == expected
    got = post(server, "/v1/pipelines/text-generation", {"model": "gpt", "inputs": "the cat",
                                                         "parameters": {"max_new_tokens": 6}}).json()
    assert got == lmforge.pipeline("text-generation", model=checkpoints["gpt"])("the cat", max_new_tokens=6)


def test_tokenize(server, checkpoints):
    got = post(server, "/tokenize", {"model": "gpt", "text": "the cat"}).json()
    assert got["tokens"] == lmforge.load(checkpoints["gpt"]).tokenizer.encode("the cat")
    assert got["count"] == len(got["tokens"]) and got["max_model_len"] == 1024


def test_eight_staggered_concurrent_greedy_requests_equal_sequential_generate(server, client, checkpoints):
    """Requests join and leave the running batch at different steps; each gets sequential generate's text."""
    max_tokens = [6 + 5 * i for i in range(8)]
    expected = [expected_continuation(checkpoints["gpt"], p, n) for p, n in zip(PROMPTS, max_tokens)]
    got = [None] * 8

    def ask(index):
        stream = client.completions.create(model="gpt", prompt=PROMPTS[index], max_tokens=max_tokens[index],
                                           temperature=0, stream=index % 2 == 0)
        got[index] = "".join(c.choices[0].text for c in stream if c.choices) if index % 2 == 0 \
            else stream.choices[0].text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
        time.sleep(0.03)
    for thread in threads:
        thread.join(60)
    assert got == expected
    # the encoder-decoder, through the same engine
    sources = ["the cat", "a good film with a great cast .", "Mary", "John Smith lives in New York ."]
    expected = lmforge.pipeline("translation", model=checkpoints["bart"])(sources, max_new_tokens=12)
    results = [None] * 4

    def translate(index):
        results[index] = post(server, "/v1/pipelines/translation", {"model": "bart", "inputs": sources[index],
                                                                     "parameters": {"max_new_tokens": 12}}).json()

    threads = [threading.Thread(target=translate, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
        time.sleep(0.02)
    for thread in threads:
        thread.join(60)
    assert results == expected


def test_seeded_sampling_is_reproducible(client):
    def sample():
        return client.completions.create(model="gpt", prompt="the cat", max_tokens=10, temperature=0.9, top_p=0.9,
                                         seed=7, extra_body={"top_k": 20, "ignore_eos": True}).choices[0].text
    first = sample()
    assert first == sample()
    greedy = client.completions.create(model="gpt", prompt="the cat", max_tokens=10, temperature=0,
                                       extra_body={"ignore_eos": True}).choices[0].text
    assert first != greedy  # it did sample (a tiny random model at temperature 0.9 does not repeat its argmax)


# ---- faults: the right status and error shape, and the server keeps serving ------------------------------------
def test_client_disconnect_frees_its_slot(server):
    running = 'lmforge_running_requests{model="slow"}'
    before = server.metric("lmforge_generated_tokens_total", AUTH)
    response = post(server, "/v1/completions", {"model": "slow", "prompt": "the cat", "max_tokens": 4000,
                                                "temperature": 0, "stream": True, "ignore_eos": True}, stream=True)
    lines = response.iter_lines()
    chunks = 0
    while chunks < 3:
        if next(lines).startswith(b"data: "):
            chunks += 1
    assert server.metric(running, AUTH) == 1
    response.close()  # the client goes away after 3 chunks
    closed = time.monotonic()
    while server.metric(running, AUTH) != 0:
        assert time.monotonic() - closed < 2.0, "the slot was not freed within 2 s"
        time.sleep(0.05)
    assert server.metric("lmforge_cancelled_total", AUTH) >= 1
    assert server.metric("lmforge_generated_tokens_total", AUTH) - before < 4000  # it stopped early
    assert post(server, "/v1/completions", {"model": "gpt", "prompt": "the", "max_tokens": 2}).status_code == 200


def test_bad_requests_get_openai_shaped_errors(server, client):
    raw = requests.post(server.url + "/v1/completions", data=b'{"model": "gpt", "prompt": ', headers=AUTH, timeout=10)
    assert_error(raw, 400, "invalid_json")
    big = requests.post(server.url + "/v1/completions", data=b"x" * 100_000,
                        headers={**AUTH, "Content-Type": "application/json"}, timeout=10)
    assert_error(big, 413, "request_too_large")
    long_prompt = "the cat sat on the mat . " * 200
    assert_error(post(server, "/v1/completions", {"model": "gpt", "prompt": long_prompt}), 400,
                 "context_length_exceeded", "prompt")
    assert_error(post(server, "/v1/completions", {"model": "gpt", "prompt": "x", "top_p": 1.5}), 400, param="top_p")
    assert_error(post(server, "/v1/completions", {"model": "gpt", "prompt": "x", "temperature": "hot"}), 400,
                 param="temperature")
    error = assert_error(post(server, "/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": 0}), 400,
                         param="max_tokens")
    assert "'max_tokens' must be >= 1, got 0" in error["message"]
    assert_error(post(server, "/v1/completions", {"model": "nope", "prompt": "x"}), 404, "model_not_found", "model")
    assert_error(post(server, "/v1/completions", {"model": "mlm", "prompt": "x"}), 400, "unsupported_task")
    error = assert_error(post(server, "/v1/pipelines/fill-mask", {"model": "gpt", "inputs": "x"}), 400,
                         "unsupported_task")
    assert "text-generation" in error["message"]  # says which tasks it can serve
    assert_error(post(server, "/v1/chat/completions", {"model": "gpt", "messages": []}), 400, param="messages")
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        assert_error(post(server, "/v1/completions", {"model": "gpt", "prompt": "x"}, headers=headers), 401,
                     "invalid_api_key")
        assert_error(requests.get(server.url + "/v1/models", headers=headers, timeout=5), 401, "invalid_api_key")
    with pytest.raises(openai.BadRequestError) as caught:  # the oracle reads our errors too
        client.completions.create(model="gpt", prompt="x", top_p=1.5)
    assert caught.value.body["param"] == "top_p"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")
    # still serving
    assert client.completions.create(model="gpt", prompt="the", max_tokens=2, temperature=0).choices[0].text is not None
