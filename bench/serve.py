"""`lmforge serve` under concurrent streaming clients: continuous batching vs one request at a time vs
Hugging Face `generate` called once per request.

Random GPT-2 models (Hugging Face, seeded; the 6x384 shape and the gpt2 size, vocabulary 50257) are
saved, converted with `lmforge.load` and served by a real `lmforge serve` subprocess, twice: with
continuous batching (--max-batch 16) and with batching off (--max-batch 1). 1, 4 and 16 clients each
stream `--requests` completions of exactly `--tokens` new tokens (greedy, ignore_eos) for a prompt
of `--prompt-tokens` ids. The tokenizer is a word-level one with one word per id, so every token
is one streamed chunk. Reported: aggregate new tokens/s (all tokens / wall time), time to first
token and inter-token latency (gap between chunks of one stream), p50 and p95. The Hugging Face row
runs the same requests one after another in this process (`generate` once per request).

    python bench/serve.py                               # both sizes, 1/4/16 clients
    python bench/serve.py --sizes small --tokens 16     # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import torch

SIZES = {"small": (6, 384, 6), "gpt2": (12, 768, 12)}  # n_layer, n_embd, n_head
VOCAB = 50257


def save_models(root: Path, size: str) -> tuple[Path, object]:
    """A seeded random HF GPT-2 of `size` and the same weights as an lmforge checkpoint with a word-level tokenizer."""
    import transformers
    from tokenizers import Tokenizer as Backend
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    import lmforge
    from lmforge.tokenizer import Tokenizer

    layers, width, heads = SIZES[size]
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=layers, n_embd=width, n_head=heads, vocab_size=VOCAB, n_positions=1024)
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(root / f"{size}-hf")
    backend = Backend(WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    backend.pre_tokenizer = WhitespaceSplit()
    model = lmforge.load(root / f"{size}-hf")
    model.attach_tokenizer(Tokenizer(backend, {"eos": f"w{VOCAB - 1}"}))
    return model.save(root / size), hf


class ServerProcess:
    def __init__(self, path: Path, max_batch: int, threads: int, port: int):
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.process = subprocess.Popen([sys.executable, "-m", "lmforge", "serve", str(path), "--port", str(port),
                                         "--max-batch", str(max_batch)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for _ in range(600):
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def one_stream(url: str, model: str, prompt: list[int], tokens: int, record: dict) -> None:
    started = time.perf_counter()
    arrivals = []
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    with requests.post(url + "/v1/completions", json=body, stream=True, timeout=600) as response:
        response.raise_for_status()
        for event in response.iter_lines(delimiter=b"\n\n"):
            if not event.startswith(b"data: ") or event == b"data: [DONE]":
                continue
            chunk = json.loads(event[6:])
            if chunk.get("usage"):
                record["tokens"] += chunk["usage"]["completion_tokens"]
            elif chunk["choices"][0]["text"]:
                arrivals.append(time.perf_counter())
    record["ttft"].append(arrivals[0] - started)
    record["itl"].extend(b - a for a, b in zip(arrivals, arrivals[1:]))


def run_clients(url: str, model: str, clients: int, requests_each: int, prompt: list[int], tokens: int) -> dict:
    record = {"tokens": 0, "ttft": [], "itl": []}

    def client() -> None:
        for _ in range(requests_each):
            one_stream(url, model, prompt, tokens, record)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    record["seconds"] = time.perf_counter() - start
    return record


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def hf_once_per_request(hf, prompt: list[int], tokens: int, count: int) -> float:
    """Aggregate tokens/s of `count` HF generate calls one after another."""
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        hf.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up
        start = time.perf_counter()
        for _ in range(count):
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, min_new_tokens=tokens,
                              do_sample=False, pad_token_id=0)
            assert out.shape[1] == len(prompt) + tokens
    return count * tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=1, help="requests per client, one after another")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per request")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server and of HF")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompt = torch.randint(1, VOCAB - 1, (args.prompt_tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    print(f"{args.tokens} new tokens per request, prompt {args.prompt_tokens} tokens, {args.requests} request(s) "
          f"per client, float32, {args.threads} threads\n")
    print("| model | clients | mode | tokens/s | vs one-at-a-time | TTFT p50 / p95 (s) | ITL p50 / p95 (ms) |")
    print("|---|---:|---|---:|---:|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path, hf = save_models(Path(tmp), size)
            results = {}
            for mode, max_batch in (("batching off", 1), ("continuous batching", 16)):
                server = ServerProcess(path, max_batch, args.threads, args.port)
                try:
                    run_clients(server.url, path.name, 1, 1, prompt, 4)  # warm-up
                    for clients in args.clients:
                        results[mode, clients] = run_clients(server.url, path.name, clients, args.requests, prompt,
                                                             args.tokens)
                finally:
                    server.stop()
            label = f"{SIZES[size][0]}x{SIZES[size][1]}"
            for clients in args.clients:
                base = results["batching off", clients]
                base_rate = base["tokens"] / base["seconds"]
                for mode in ("batching off", "continuous batching"):
                    r = results[mode, clients]
                    rate = r["tokens"] / r["seconds"]
                    itl = r["itl"] or [0.0]
                    print(f"| {label} | {clients} | {mode} | {rate:,.0f} | {rate / base_rate:.2f}x | "
                          f"{percentile(r['ttft'], 50):.3f} / {percentile(r['ttft'], 95):.3f} | "
                          f"{1000 * percentile(itl, 50):.1f} / {1000 * percentile(itl, 95):.1f} |")
                hf_rate = hf_once_per_request(hf, prompt, args.tokens, clients * args.requests)
                print(f"| {label} | {clients} | HF generate, once per request | {hf_rate:,.0f} | "
                      f"{hf_rate / base_rate:.2f}x | - | - |", flush=True)


if __name__ == "__main__":
    main()
