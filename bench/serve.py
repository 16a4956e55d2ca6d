"""`lmforge serve` under concurrent streaming clients: continuous batching vs one request at a time vs
Hugging Face `generate` called once per request.

Random GPT-2 models (Hugging Face, seeded; the 6x384 shape and the gpt2 size, vocabulary 50257) are
saved, converted with `lmforge.load` and served by a real `lmforge serve` subprocess, twice: with
continuous batching (--max-batch 16) and with batching off (--max-batch 1), both running at once: each
number of clients is measured on one server then the other, `--repeats` times (interleaved, so that a
shared machine's load falls on both alike; the samples of all repeats are pooled). 1, 4 and 16 clients
each stream `--requests` completions of exactly `--tokens` new tokens (greedy, ignore_eos) for a prompt
of `--prompt-tokens` ids. The tokenizer is a word-level one with one word per id, so every token
is one streamed chunk. Reported: aggregate new tokens/s (all tokens / wall time), time to first
token and inter-token latency (gap between chunks of one stream), p50 and p95, and the p95 against the
same server's with one client (the goal at 16 clients: at most 3x). The Hugging Face row runs the same
requests one after another in this process (`generate` once per request).

    python bench/serve.py                               # both sizes, 1/4/16 clients
    python bench/serve.py --sizes 6x384 gpt2 --clients 1 16 --repeats 3
    python bench/serve.py --sizes small --tokens 16     # quicker
    python bench/serve.py --sizes gpt2 --step-profile   # where a decoding step of 1/4/16 rows goes

`--step-profile` drives the server's engine in this process (no HTTP): it fills the running batch with
1, 4 and 16 greedy requests and times `--tokens` decoding turns in CPU time of the engine thread (so the
other processes on a shared machine matter less), split by forward hooks into the blocks' projections
(`nn.decoding_linear`), the attention core (attention minus its projections), the MLP activation, the LM
head, the rest of the model's forward (embeddings, norms, masks, cache writes, module calls) and the
engine's own work (token picking, detokenization, events). Medians over the turns; then the CPU time of the
longest row leaving the batch (the others' cache re-aligned).
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
ALIASES = {"6x384": "small", "12x768": "gpt2"}
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
        deadline = time.monotonic() + 600  # /health answers 503 while the engine loads and warms up
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.process.kill()  # never leave a server behind
        self.process.wait()
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


def run_clients(url: str, model: str, clients: int, requests_each: int, prompt: list[int], tokens: int,
                record: dict | None = None) -> dict:
    """`clients` streaming clients at once; their tokens, TTFTs, ITLs and wall seconds are added to `record`."""
    record = record if record is not None else {"tokens": 0, "ttft": [], "itl": [], "seconds": 0.0}

    def client() -> None:
        for _ in range(requests_each):
            one_stream(url, model, prompt, tokens, record)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    record["seconds"] += time.perf_counter() - start
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


class PartTimer:
    """CPU time (this thread) spent inside modules, by part: forward pre/post hooks add up each call."""

    def __init__(self):
        self.totals: dict[str, float] = {}
        self.handles = []

    def watch(self, module, part: str) -> None:
        started = []

        def before(*_):
            started.append(time.thread_time())

        def after(*_):
            self.totals[part] = self.totals.get(part, 0.0) + time.thread_time() - started.pop()

        self.handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def take(self) -> dict[str, float]:
        totals, self.totals = self.totals, {}
        return totals


def step_profile(path: Path, label: str, rows_list: list[int], turns: int, prompt: list[int]) -> None:
    """The breakdown table of one decoding turn of the server's engine for each number of rows (see the docstring)."""
    import lmforge
    from lmforge.infer.generate import eval_mode
    from lmforge.nn.attention import Attention
    from lmforge.nn.mlp import MLP
    from lmforge.serve.engine import Engine, GenerationRequest, Sampling
    from lmforge.serve.metrics import Metrics

    model = lmforge.load(path)
    timer = PartTimer()
    for module in model.modules():
        if isinstance(module, (Attention, MLP)):
            part = "attention" if isinstance(module, Attention) else "mlp"
            timer.watch(module, part)
            for child in module.children():
                if isinstance(child, torch.nn.Linear):
                    timer.watch(child, part + " projections")
    timer.watch(model.head, "LM head")
    timer.watch(model, "model")
    names = ["projections", "attention core", "MLP activation", "LM head", "rest of forward", "engine"]
    print(f"\n{label}: one decoding turn of the engine, CPU ms (median of {turns}), prompt {len(prompt)} tokens\n")
    print("| rows | turn | " + " | ".join(names) + " | tokens/s (CPU) | a row leaves |")
    print("|---:|---:|" + "---:|" * len(names) + "---:|---:|")
    for rows in rows_list:
        engine = Engine(model, label, Metrics(), max_batch=rows, prefill_chunk=len(prompt) * rows)
        samples = {name: [] for name in ["turn"] + names}
        with eval_mode(model), torch.inference_mode():
            for _ in range(rows):
                engine.waiting.append(GenerationRequest(prompt, Sampling(max_tokens=turns + 4, temperature=0,
                                                                         ignore_eos=True), lambda event: None))
            while engine.waiting or engine.prefilling:
                engine._turn()
            engine._turn()
            timer.take()
            for _ in range(turns):
                start = time.thread_time()
                engine._turn()
                turn = time.thread_time() - start
                t = timer.take()
                parts = {"turn": turn, "projections": t["attention projections"] + t["mlp projections"],
                         "attention core": t["attention"] - t["attention projections"],
                         "MLP activation": t["mlp"] - t["mlp projections"], "LM head": t["LM head"],
                         "rest of forward": t["model"] - t["attention"] - t["mlp"] - t["LM head"],
                         "engine": turn - t["model"]}
                for name, seconds in parts.items():
                    samples[name].append(seconds)
            start = time.thread_time()
            engine.batch.keep(list(range(1, rows)))  # the first (longest) row leaves
            leave = time.thread_time() - start
        medians = {name: statistics.median(values) for name, values in samples.items()}
        print(f"| {rows} | {1000 * medians['turn']:.1f} | " + " | ".join(f"{1000 * medians[n]:.1f}" for n in names)
              + f" | {rows / medians['turn']:.0f} | {1000 * leave:.1f} |", flush=True)
    for handle in timer.handles:
        handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES) + list(ALIASES))
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=1, help="requests per client, one after another")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds over both servers, pooled")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per request")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server and of HF")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--step-profile", action="store_true",
                        help="instead of the servers: time one engine turn of --clients rows in this process, by part")
    args = parser.parse_args()
    args.sizes = [ALIASES.get(size, size) for size in args.sizes]
    torch.set_num_threads(args.threads)
    prompt = torch.randint(1, VOCAB - 1, (args.prompt_tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    if args.step_profile:
        with tempfile.TemporaryDirectory() as tmp:
            for size in args.sizes:
                path, _ = save_models(Path(tmp), size)
                step_profile(path, f"{SIZES[size][0]}x{SIZES[size][1]}", args.clients, args.tokens, prompt)
        return
    print(f"{args.tokens} new tokens per request, prompt {args.prompt_tokens} tokens, {args.requests} request(s) "
          f"per client, {args.repeats} interleaved repeat(s), float32, {args.threads} threads\n")
    print("| model | clients | mode | tokens/s | vs one-at-a-time | TTFT p50 / p95 (s) | ITL p50 / p95 (ms) "
          "| ITL p95 vs 1 client |")
    print("|---|---:|---|---:|---:|---|---|---:|")
    modes = {"batching off": 1, "continuous batching": 16}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path, hf = save_models(Path(tmp), size)
            results = {(mode, clients): None for mode in modes for clients in args.clients}
            servers = {}
            try:
                for offset, (mode, max_batch) in enumerate(modes.items()):
                    servers[mode] = ServerProcess(path, max_batch, args.threads, args.port + offset)
                    run_clients(servers[mode].url, path.name, 1, 1, prompt, 4)  # warm-up
                for _ in range(args.repeats):
                    for clients in args.clients:
                        for mode, server in servers.items():
                            results[mode, clients] = run_clients(server.url, path.name, clients, args.requests,
                                                                 prompt, args.tokens, results[mode, clients])
            finally:
                for server in servers.values():
                    server.stop()
            label = f"{SIZES[size][0]}x{SIZES[size][1]}"
            for clients in args.clients:
                base = results["batching off", clients]
                base_rate = base["tokens"] / base["seconds"]
                for mode in modes:
                    r = results[mode, clients]
                    rate = r["tokens"] / r["seconds"]
                    itl = r["itl"] or [0.0]
                    single = results.get((mode, 1))
                    vs_single = (f"{percentile(itl, 95) / percentile(single['itl'], 95):.2f}x"
                                 if single and single["itl"] else "-")
                    print(f"| {label} | {clients} | {mode} | {rate:,.0f} | {rate / base_rate:.2f}x | "
                          f"{percentile(r['ttft'], 50):.3f} / {percentile(r['ttft'], 95):.3f} | "
                          f"{1000 * percentile(itl, 50):.1f} / {1000 * percentile(itl, 95):.1f} | {vs_single} |")
                hf_rate = hf_once_per_request(hf, prompt, args.tokens, clients * args.requests)
                print(f"| {label} | {clients} | HF generate, once per request | {hf_rate:,.0f} | "
                      f"{hf_rate / base_rate:.2f}x | - | - | - |", flush=True)


if __name__ == "__main__":
    main()
