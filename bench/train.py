"""Training throughput and peak memory: lmforge's Trainer vs a plain Hugging Face transformers loop.

    python bench/train.py [--steps 8] [--layers 6] [--width 384] [--seq-len 256] [--batch 8]

Both train the same GPT-2 shape (HF GPT2LMHeadModel with its default SDPA attention; lmforge's
gpt2 preset resized) in float32, with dropout 0.1, AdamW (foreach), clipping at 1.0, on the same
batches of tinyshakespeare tokenized with the GPT-2 vocabulary (random tokens if ../shared/data is
absent). Each side runs in its own subprocess so peak memory (ru_maxrss on CPU, max allocated on
CUDA) is its own. Achieved FLOP/s = 6 * parameters * tokens/s, shown as a fraction of this machine's
measured float32 matmul peak. Prints a table and the lmforge/HF ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def token_batches(steps: int, batch: int, seq_len: int, vocab: int) -> torch.Tensor:
    """(steps, batch, seq_len) token ids from tinyshakespeare with the GPT-2 BPE, or random ids."""
    needed = steps * batch * seq_len
    text_file, vocab_file = DATA / "pretrain" / "tinyshakespeare.txt", DATA / "tokenizers" / "gpt2-vocab.json"
    if text_file.is_file() and vocab_file.is_file():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        tokenizer = Tokenizer(models.BPE.from_file(str(vocab_file), str(DATA / "tokenizers" / "gpt2-merges.txt")))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        ids = tokenizer.encode(text_file.read_text(encoding="utf-8")).ids
        ids = (ids * (needed // len(ids) + 1))[:needed]
        return torch.tensor(ids).view(steps, batch, seq_len)
    return torch.randint(0, vocab, (steps, batch, seq_len), generator=torch.Generator().manual_seed(0))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_lmforge(args, batches: torch.Tensor, device: torch.device) -> dict:
    from lmforge import build_model, presets
    from lmforge.train import Distributed, Trainer, TrainSettings

    config = presets.get("gpt2").replace(n_layers=args.layers, d_model=args.width, n_heads=args.width // 64,
                                         d_ff=4 * args.width, max_positions=args.seq_len)
    model = build_model(config)
    settings = TrainSettings(max_steps=args.warmup + args.steps, batch_size=args.batch, seq_len=args.seq_len,
                             warmup_steps=0, lr=1e-4, weight_decay=0.0, log_every=0, eval_every=0, save_every=0,
                             clip_norm=1.0, compile=args.compile)

    class Timed:  # yields the batches and records when the timed steps start
        def __init__(self, *_):
            self.started = None

        def __iter__(self):
            for index, ids in enumerate(batches):
                if index == args.warmup:
                    self.started = time.perf_counter()
                yield {"input_ids": ids, "labels": ids}

    trainer = Trainer(model, settings, Timed, dist=Distributed(device=device), progress=False)
    trainer.fit()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - trainer.source.started
    return {"seconds": seconds, "params": trainer.n_params}


def run_hf(args, batches: torch.Tensor, device: torch.device) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=args.width // 64, n_positions=args.seq_len)
    model = GPT2LMHeadModel(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, foreach=True)
    started = None
    for index, ids in enumerate(batches):
        if index == args.warmup:
            started = time.perf_counter()
        ids = ids.to(device)
        model(input_ids=ids, labels=ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - started, "params": sum(p.numel() for p in model.parameters())}


def matmul_peak(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """Measured float32 matmul FLOP/s (best of `repeats`)."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def child(args) -> None:
    device = torch.device(args.device)
    torch.manual_seed(0)
    batches = token_batches(args.warmup + args.steps, args.batch, args.seq_len, 50257)
    result = (run_lmforge if args.child == "lmforge" else run_hf)(args, batches, device)
    result["tokens"] = args.steps * args.batch * args.seq_len
    result["peak_mb"] = peak_memory_mb(device)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the lmforge model (HF stays eager)")
    parser.add_argument("--child", choices=["lmforge", "hf"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    results = {}
    for name in ("hf", "lmforge"):
        command = [sys.executable, __file__, "--child", name] + sys.argv[1:]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[name] = json.loads(output.strip().splitlines()[-1])
    peak = matmul_peak(torch.device(args.device))
    print(f"GPT-2 shape: {args.layers} layers, {args.width} wide, {args.seq_len} tokens, batch {args.batch}, "
          f"float32, {args.device} ({torch.get_num_threads()} threads); matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"{'':10} {'params':>12} {'tokens/s':>10} {'peak MB':>9} {'GFLOP/s':>9} {'of peak':>8}")
    for name, r in results.items():
        speed = r["tokens"] / r["seconds"]
        flops = 6 * r["params"] * speed
        print(f"{name:10} {r['params']:>12,} {speed:>10,.0f} {r['peak_mb']:>9,.0f} {flops / 1e9:>9.1f} "
              f"{flops / peak:>8.1%}")
    ratio = (results["lmforge"]["tokens"] / results["lmforge"]["seconds"]) / (results["hf"]["tokens"] / results["hf"]["seconds"])
    print(f"lmforge / HF tokens/s: {ratio:.2f}x; peak memory ratio: "
          f"{results['lmforge']['peak_mb'] / results['hf']['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
