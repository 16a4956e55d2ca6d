"""Training throughput against Hugging Face transformers and against the machine's measured matmul peak.

    python bench/train.py [--precision fp32|bf16] [--size small|gpt2] [--threads N] [--repeats R] [--steps S]
                          [--dropout 0.1] [--compile]

Sides: HF GPT2LMHeadModel with a plain loop in float32 (the reference), HF in the chosen precision
(bf16: per-op autocast, what HF's Trainer does with bf16=True) and lmforge's Trainer in that precision
(bf16: fp32 master weights, a bf16 working copy). All start from the SAME weights (the HF model is saved
once and lmforge loads that folder) and train on the same batches of tinyshakespeare with the GPT-2 BPE
(ids folded into the vocabulary of the size; random ids when ../shared/data is absent), with dropout 0.1,
AdamW, clipping at 1.0, so their losses are comparable. `--dropout 0` compares them without dropout (both then
take SDPA's fused causal kernel; with dropout, HF takes SDPA's CPU path with dropout and lmforge its own, see
lmforge.nn.attention_dropout).

Each side is its own long-lived subprocess (its own peak memory: ru_maxrss on CPU, max allocated on
CUDA) that first runs `--warmup` untimed steps; then the timed blocks of `--steps` steps are interleaved
(HF fp32, HF precision, lmforge, HF fp32, ...) `--repeats` times. Ratios are taken per repeat and the
median is reported. Achieved FLOP/s = (6 N + 12 L T d) per token (PaLM's count: parameters plus
attention scores) times tokens/s, against the peak of a large matmul in that precision measured here. The
limit of each ratio is a step that does nothing but those products at that peak: no implementation of the same
arithmetic can beat the HF side by more.
On a CPU the ratios are also given per CPU-second of each side (robust to other load at --threads 1).
Each side's minor page faults per step are reported too: the kernel mapping in fresh memory for large
tensors every step is a cost apart from arithmetic (lmforge's Trainer keeps its heap, `train.host_memory`).
Runs unchanged on CUDA (--device cuda; MFU then against the GPU's measured peak).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZES = {  # layers, width, vocabulary, sequence length, batch; default timed blocks (each side ~3 minutes at most)
    "small": dict(layers=6, width=384, vocab=8192, seq_len=256, batch=8, repeats=5, steps=2, warmup=3),
    "gpt2": dict(layers=12, width=768, vocab=50257, seq_len=256, batch=8, repeats=3, steps=1, warmup=2),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def token_batches(count: int, batch: int, seq_len: int, vocab: int) -> torch.Tensor:
    """(count, batch, seq_len) token ids of tinyshakespeare with the GPT-2 BPE (mod vocab), or random ids."""
    needed = count * batch * seq_len
    text_file, vocab_file = DATA / "pretrain" / "tinyshakespeare.txt", DATA / "tokenizers" / "gpt2-vocab.json"
    if not (text_file.is_file() and vocab_file.is_file()):
        return torch.randint(0, vocab, (count, batch, seq_len), generator=torch.Generator().manual_seed(0))
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE.from_file(str(vocab_file), str(DATA / "tokenizers" / "gpt2-merges.txt")))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ids = tokenizer.encode(text_file.read_text(encoding="utf-8")).ids
    ids = (ids * (needed // len(ids) + 1))[:needed]
    return (torch.tensor(ids) % vocab).view(count, batch, seq_len)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def page_faults() -> int:
    """Minor page faults of this process so far (the kernel mapping in fresh memory: a cost apart from compute)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def matmul_peak(device: torch.device, dtype: torch.dtype, budget_s: float = 0.3) -> float:
    """FLOP/s of the largest square matmul (up to 4096, 8192 on CUDA) that runs within `budget_s`, best of 3,
    written into one preallocated output (the arithmetic, not the page faults of a fresh 64 MB result)."""
    limit = 8192 if device.type == "cuda" else 4096
    size, best = 256, 0.0
    while True:
        a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
        product = a @ b  # first call: allocation and kernel selection
        seconds = []
        for _ in range(3):
            synchronize(device)
            start = time.perf_counter()
            torch.mm(a, b, out=product)
            synchronize(device)
            seconds.append(time.perf_counter() - start)
        best = max(best, 2 * size**3 / min(seconds))
        if size >= limit or min(seconds) * 8 > budget_s:
            return best
        size *= 2


# ---- the sides (each in its own process) -------------------------------------------------------
class Blocks:
    """Feeds batches and, at each block boundary, reports the block just timed and waits for "go" on stdin."""

    def __init__(self, batches: torch.Tensor, warmup: int, steps: int, device: torch.device):
        self.batches, self.warmup, self.steps, self.device = batches, warmup, steps, device
        self.started: float | None = None
        self.cpu_started = 0.0
        self.faults_started = 0
        self.losses: list[float] = []

    def boundary(self, index: int) -> None:
        if index < self.warmup or (index - self.warmup) % self.steps:
            return
        synchronize(self.device)
        if self.started is not None:
            self.report()
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()  # the parent's "go"
        self.started, self.cpu_started, self.faults_started = time.perf_counter(), time.process_time(), page_faults()

    def report(self) -> None:
        synchronize(self.device)
        seconds = time.perf_counter() - self.started
        print(json.dumps({"seconds": seconds, "cpu_seconds": time.process_time() - self.cpu_started, "loss": statistics.fmean(self.losses[-self.steps:]),
                          "faults": (page_faults() - self.faults_started) / self.steps,
                          "peak_mb": peak_memory_mb(self.device)}), flush=True)


def run_lmforge(args, model_dir: str, blocks: Blocks, device: torch.device) -> None:
    import lmforge
    from lmforge.train import Distributed, Trainer, TrainSettings

    model = lmforge.load(model_dir)
    settings = TrainSettings(max_steps=len(blocks.batches), batch_size=args.batch, seq_len=args.seq_len,
                             warmup_steps=0, lr=args.lr, schedule="constant", weight_decay=0.0, log_every=1,
                             eval_every=0, save_every=0, clip_norm=1.0, precision=args.precision,
                             compile=args.compile)

    def source(*_):
        for index, ids in enumerate(blocks.batches):
            blocks.boundary(index)
            yield {"input_ids": ids, "labels": ids}

    def record_loss(model, batch):
        loss = model(**batch).loss
        blocks.losses.append(float(loss.detach()))
        return loss

    Trainer(model, settings, source, loss_fn=record_loss, dist=Distributed(device=device), progress=False).fit()
    blocks.report()


def run_hf(args, model_dir: str, blocks: Blocks, device: torch.device, precision: str) -> None:
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(model_dir).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, foreach=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    for index, ids in enumerate(blocks.batches):
        blocks.boundary(index)
        ids = ids.to(device)
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        blocks.losses.append(float(loss.detach()))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    blocks.report()


def child(args) -> None:
    device = torch.device(args.device)
    side, precision = args.child.split(":")
    batches = token_batches(args.warmup + args.repeats * args.steps, args.batch, args.seq_len, args.vocab)
    blocks = Blocks(batches, args.warmup, args.steps, device)
    if side == "lmforge":
        run_lmforge(args, args.model_dir, blocks, device)
    else:
        run_hf(args, args.model_dir, blocks, device, precision)


# ---- the parent: interleave, then report -------------------------------------------------------
def save_initial_model(args, folder: str) -> int:
    """The shared starting point: a seeded HF GPT-2 of the chosen shape; returns its parameter count."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=args.width // 64, vocab_size=args.vocab,
                        n_positions=args.seq_len, bos_token_id=0, eos_token_id=0, resid_pdrop=args.dropout,
                        embd_pdrop=args.dropout, attn_pdrop=args.dropout)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def interleave(args, sides: list[str], model_dir: str) -> dict[str, list[dict]]:
    """Start every side, then run their timed blocks in turn; returns each side's block results."""
    base = [sys.executable, __file__, *sys.argv[1:], "--model-dir", model_dir]
    procs = {side: subprocess.Popen(base + ["--child", side], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True) for side in sides}

    def message(side: str) -> dict:
        line = procs[side].stdout.readline()
        if not line:
            raise SystemExit(f"the {side} side stopped (exit code {procs[side].wait()})")
        return json.loads(line)

    for side in sides:
        message(side)  # warm-up done, waiting
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for _ in range(args.repeats):
        for side in sides:
            procs[side].stdin.write("go\n")
            procs[side].stdin.flush()
            results[side].append(message(side))
            if len(results[side]) < args.repeats:
                message(side)  # ready for the next block
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--size", choices=tuple(SIZES), default="small")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per side (default: torch's)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved timed blocks per side (small: 5, gpt2: 3)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per timed block (small: 2, gpt2: 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (small: 3, gpt2: 2)")
    parser.add_argument("--dropout", type=float, default=0.1, help="residual, embedding and attention dropout (GPT-2's 0.1)")
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the lmforge model (HF stays eager)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = SIZES[args.size]
    args.layers, args.width, args.vocab = shape["layers"], shape["width"], shape["vocab"]
    args.seq_len, args.batch = args.seq_len or shape["seq_len"], args.batch or shape["batch"]
    for name in ("repeats", "steps", "warmup"):
        setattr(args, name, shape[name] if getattr(args, name) is None else getattr(args, name))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return
    device = torch.device(args.device)
    sides = ["hf:fp32"] + ([f"hf:{args.precision}"] if args.precision != "fp32" else []) + [f"lmforge:{args.precision}"]
    peaks = {name: matmul_peak(device, dtype) for name, dtype in DTYPES.items()}
    if peaks[args.precision] < peaks["fp32"]:
        print(f"note: {args.precision} matmuls run at {peaks[args.precision] / 1e9:,.1f} GFLOP/s here, slower than "
              f"fp32 ({peaks['fp32'] / 1e9:,.1f}): this device emulates {args.precision}, expect a slow run", flush=True)
    with tempfile.TemporaryDirectory() as model_dir:
        params = save_initial_model(args, model_dir)
        results = interleave(args, sides, model_dir)
    report(args, params, results, peaks, device)


def report(args, params: int, results: dict[str, list[dict]], peaks: dict[str, float], device: torch.device) -> None:
    tokens = args.steps * args.batch * args.seq_len
    flops_per_token = 6 * params + 12 * args.layers * args.seq_len * args.width
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"cpu, {torch.get_num_threads()} thread(s)")
    print(f"GPT-2 {args.size}: {args.layers} layers x {args.width}, vocab {args.vocab}, {params / 1e6:.1f}M parameters, "
          f"T={args.seq_len}, batch {args.batch}, dropout {args.dropout}; {where}; {args.repeats} interleaved blocks of "
          f"{args.steps} steps after {args.warmup} warm-up steps; lmforge {'compiled' if args.compile else 'eager'}, HF eager")
    print("measured matmul peak: " + ", ".join(f"{name} {peak / 1e9:,.1f} GFLOP/s" for name, peak in peaks.items()))
    print()
    print("| side | tokens/s (median) | GFLOP/s (6N+12LTd per token) | matmul peak GFLOP/s | of peak | "
          "mean loss, last block | page faults/step | peak MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    speed = {side: [tokens / block["seconds"] for block in blocks] for side, blocks in results.items()}
    for side, blocks in results.items():
        median = statistics.median(speed[side])
        flops = flops_per_token * median
        peak = peaks[side.split(':')[1]]
        print(f"| {side} | {median:,.0f} | {flops / 1e9:,.1f} | {peak / 1e9:,.1f} | {flops / peak:.1%} | "
              f"{blocks[-1]['loss']:.4f} | {statistics.median(b['faults'] for b in blocks):,.0f} | "
              f"{max(b['peak_mb'] for b in blocks):,.0f} |")
    ours = f"lmforge:{args.precision}"
    print()
    ceiling = peaks[args.precision] / flops_per_token  # tokens/s of a step that is all matrix products at the peak
    for reference in dict.fromkeys([f"hf:{args.precision}", "hf:fp32"]):
        print(f"the limit of {ours} / {reference}: {ceiling / statistics.median(speed[reference]):.2f}x (a step doing "
              f"nothing but its {flops_per_token / 1e6:,.0f} MFLOP a token of matrix products, at the {args.precision} "
              f"peak)")
    per_cpu_second = {side: [tokens / block["cpu_seconds"] for block in blocks] for side, blocks in results.items()}
    for reference in dict.fromkeys([f"hf:{args.precision}", "hf:fp32"]):
        for what, values in (("tokens/s", speed), ("tokens per CPU-second", per_cpu_second)):
            ratios = [a / b for a, b in zip(values[ours], values[reference])]
            print(f"{ours} / {reference} {what}: median {statistics.median(ratios):.2f}x "
                  f"(per repeat: {', '.join(f'{r:.2f}' for r in ratios)})")
    if device.type == "cpu":
        print("(tokens per CPU-second: each side's process CPU time, less distorted than wall time on a loaded "
              "machine when --threads 1)")


if __name__ == "__main__":
    main()
