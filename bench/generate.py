"""Greedy generation speed in each weight format: lmforge `generate` vs Hugging Face `generate`, same models.

Random GPT-2 and Llama-shaped (grouped-query attention, rotary, SwiGLU) models (Hugging Face, seeded)
are saved and loaded with `lmforge.load(folder, dtype=...)` in each `--dtype` (fp32, bf16, int8:
weight-only, per-channel; int8-dynamic: the same weights, activations rounded to 8 bits per row); both
libraries generate exactly `--new-tokens` tokens (no EOS) on the CPU, at each `--batches` size. Hugging Face runs in fp32 (the baseline of every ratio) and, where it supports the
format, in the same dtype (bf16; it has no built-in int8 for the CPU). The timed runs of one size and
batch are interleaved (HF fp32, HF bf16, lmforge fp32, lmforge bf16, ... in turn, `--repeats` times);
each ratio is the median over the repeats of that repeat's ratio, tokens/s the median rate.

The limit column: batch decoding is bound by reading every weight once per step, so tokens/s <=
batch x bandwidth / (bytes of the weights that step reads, in that format: int8 codes + their scales,
the LM head's matrix once; a position table or a lookup-only embedding table is read a row per token
and left out); the read bandwidth is measured at the start and again among each size's timed runs (two readers
interleaved with them, `bandwidth_readers`): a shared machine's bandwidth drifts, and each row's limit uses the
fastest read seen, at the start or during its own runs.
"same tokens": lmforge fp32 must produce exactly HF fp32's tokens; bf16/int8 rows give the share of
positions equal to lmforge fp32's (random models have near-flat logits, so low-precision formats
diverge sooner than trained ones; `bench/weight_formats.py` measures the quality on a trained model).

`--compile` adds, for every format, lmforge with its compiled decoding step (`generate(..., compile=True)`:
torch.compile over a static cache) to the same interleaved runs; its rows give the ratio to lmforge's eager
decoding and the compile time, paid once per model and batch shape (the first call, less an eager call;
inductor's disk cache makes a second process compile faster).
The step columns time the decoding steps alone: the same lmforge run with a quarter of the new tokens is
interleaved too, and a step is the difference of the two times over the difference of their tokens (no prompt,
no first step, no compilation), the rate the memory-bound limit describes.

    python bench/generate.py                                   # every size, every format, batch 1 and 8
    python bench/generate.py --sizes small gpt2 --dtype fp32 int8-dynamic --compile --threads 1
    python bench/generate.py --sizes gpt2 --dtype int8 --batches 1 --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

GPT2 = ("GPT2Config", "GPT2LMHeadModel", dict(vocab_size=50257, n_positions=1024))
LLAMA = ("LlamaConfig", "LlamaForCausalLM", dict(vocab_size=49152, tie_word_embeddings=True))
SIZES = {  # name: (family, its config fields)
    "tiny": (GPT2, dict(n_layer=2, n_embd=128, n_head=4)),
    "small": (GPT2, dict(n_layer=6, n_embd=384, n_head=6)),
    "gpt2": (GPT2, dict(n_layer=12, n_embd=768, n_head=12)),
    "llama-tiny": (LLAMA, dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
                               intermediate_size=344)),
    "smollm2-135m": (LLAMA, dict(  # SmolLM2-135M's shape: 9 query heads sharing 3 key/value heads
        num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0})),
}
DTYPES = ("fp32", "bf16", "int8", "int8-dynamic")
HF_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # the formats HF runs on the CPU without extras


def hf_model(size: str):
    import transformers

    (config_class, model_class, defaults), fields = SIZES[size]
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(**defaults, **fields)
    return getattr(transformers, model_class)(config).eval()


def interleaved_times(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each of `repeats` calls of every function, the calls interleaved (a, b, c, a, b, c, ...)
    so that all see the same machine when its load drifts; one untimed warm-up call each first."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def bandwidth_readers(megabytes: int = 256) -> tuple[dict, int]:
    """Two readers of one float32 array, a sum and a vector-matrix product (how a decoding step reads a
    transposed weight), and the bytes each reads: the fastest pass of either is what the memory allows rather
    than one kernel's rate."""
    data = torch.ones(megabytes * 2**20 // 4)
    matrix = data.view(1024, -1)  # (1024, C): a wide matrix streams fastest (a long reduction per output does not)
    vector = torch.ones(1, 1024)
    return {"read: sum": data.sum, "read: vector-matrix": lambda: vector @ matrix}, data.numel() * 4


def read_bandwidth(repeats: int = 10, readers: tuple[dict, int] | None = None) -> float:
    """Bytes/s at which this machine streams float32 weights from memory: the fastest of `repeats` passes of
    `readers` (default: new `bandwidth_readers()`)."""
    readers, size = bandwidth_readers() if readers is None else readers
    times = interleaved_times(readers, repeats)
    return size / min(min(runs) for runs in times.values())


def step_weight_bytes(model) -> int:
    """Bytes one decoding step of an lmforge model reads: every weight tensor (int8 codes and scales too)
    once, except tables read a row per token: position tables and the token embedding when the LM head
    does not read it as its output matrix (untied, or replaced by an int8 copy)."""
    from lmforge.models.heads import LMHead
    from lmforge.nn.positions import LearnedPositions

    head = model.head
    head_reads_embedding = isinstance(head, LMHead) and head.tied and head.quantized is None
    skipped = {id(model.embed.weight)} if not head_reads_embedding else set()
    skipped |= {id(m.weight) for m in model.modules() if isinstance(m, LearnedPositions)}
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()] if id(t) not in skipped}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def agreement(reference: torch.Tensor, other: torch.Tensor) -> float:
    return float((reference == other).float().mean())


def main() -> None:
    import lmforge

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--dtype", nargs="+", default=list(DTYPES), choices=DTYPES, dest="dtypes")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true", help="also time lmforge's compiled decoding step")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    readers, read_bytes = bandwidth_readers()  # one 256 MB array, read at the start and among each size's runs
    bandwidth = read_bandwidth(readers=(readers, read_bytes))
    rows = []
    for size in args.sizes:
        hf = {"fp32": hf_model(size)}
        with tempfile.TemporaryDirectory() as folder:
            hf["fp32"].save_pretrained(folder)
            ours = {dtype: lmforge.load(folder, dtype=dtype).eval() for dtype in dict.fromkeys(["fp32", *args.dtypes])}
        for dtype in args.dtypes:
            if dtype in HF_DTYPES and dtype not in hf:
                hf[dtype] = hf_model(size).to(HF_DTYPES[dtype])
        params = sum(p.numel() for p in hf["fp32"].parameters())
        for batch in args.batches:
            prompt = torch.randint(0, 49000, (batch, args.prompt_tokens), generator=torch.Generator().manual_seed(1))
            mask = torch.ones_like(prompt)
            n, short = args.new_tokens, max(1, args.new_tokens // 4)

            def run_hf(model):
                with torch.inference_mode():
                    return model.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=n, do_sample=False,
                                          eos_token_id=None, pad_token_id=0)

            def run_ours(model, compile=False, new_tokens=n):
                return lmforge.infer.generate(model, prompt, mask, max_new_tokens=new_tokens, eos_token_id=[],
                                              compile=compile)

            fns = {f"hf {d}": (lambda m=m: run_hf(m)) for d, m in hf.items()}
            runs = {f"lmforge {d}": (m, False) for d, m in ours.items()}  # name: (model, compiled)
            fns.update({name: (lambda m=m: run_ours(m)) for name, (m, _) in runs.items()})
            tokens = {name: fn() for name, fn in fns.items()}
            compile_seconds = {}
            if args.compile:
                for dtype in args.dtypes:
                    start = time.perf_counter()
                    tokens[f"lmforge {dtype} compiled"] = run_ours(ours[dtype], compile=True)
                    compile_seconds[dtype] = time.perf_counter() - start
                    runs[f"lmforge {dtype} compiled"] = (ours[dtype], True)
                    fns[f"lmforge {dtype} compiled"] = lambda m=ours[dtype]: run_ours(m, compile=True)
            for name, (model, compiled) in runs.items():  # the same run, a quarter as long
                fns[f"{name} short"] = lambda m=model, c=compiled: run_ours(m, compile=c, new_tokens=short)
            times = interleaved_times({**fns, **readers}, args.repeats)
            fastest_read = max(bandwidth, read_bytes / min(min(times[name]) for name in readers))
            for dtype in args.dtypes:
                for mode in ("eager", "compiled") if args.compile else ("eager",):
                    name = f"lmforge {dtype}" + (" compiled" if mode == "compiled" else "")
                    mine = times[name]
                    same_hf = times.get(f"hf {dtype}")
                    if dtype == "fp32":
                        same = "yes" if torch.equal(tokens["hf fp32"], tokens[name]) else "NO"
                    else:
                        same = f"{agreement(tokens['lmforge fp32'], tokens[name]):.0%} of fp32's"
                    eager = times[f"lmforge {dtype}"]
                    step = statistics.median(a - b for a, b in zip(mine, times[f"{name} short"])) / (n - short)
                    rows.append(dict(
                        size=size, params=params, dtype=dtype, mode=mode, batch=batch,
                        hf32=n * batch / statistics.median(times["hf fp32"]),
                        hf_same=None if same_hf is None else n * batch / statistics.median(same_hf),
                        ours=n * batch / statistics.median(mine), step=batch / step,
                        vs_hf32=statistics.median(h / o for h, o in zip(times["hf fp32"], mine)),
                        vs_same=None if same_hf is None else statistics.median(h / o for h, o in zip(same_hf, mine)),
                        vs_eager=statistics.median(e / o for e, o in zip(eager, mine)),
                        compile=None if mode == "eager" else compile_seconds[dtype] - statistics.median(eager),
                        limit=batch * fastest_read / step_weight_bytes(ours[dtype]), bandwidth=fastest_read,
                        same=same))
                    print(f"  {size} {dtype} {mode} batch {batch}: lmforge {statistics.median(mine):.2f}s, "
                          f"HF fp32 {statistics.median(times['hf fp32']):.2f}s", flush=True)

    print(f"\ngreedy, {args.new_tokens} new tokens after {args.prompt_tokens}, CPU, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; memory read bandwidth {bandwidth / 1e9:.1f} GB/s at the start, "
          f"{min(r['bandwidth'] for r in rows) / 1e9:.1f}-{max(r['bandwidth'] for r in rows) / 1e9:.1f} GB/s "
          f"the fastest read among each size's runs (measured); ratios are "
          f"medians over {args.repeats} interleaved repeats")
    compiled = args.compile
    print("| model | parameters | weights | " + ("decoding step | " if compiled else "") + "batch | HF fp32 tok/s | "
          "HF same dtype tok/s | lmforge tok/s | vs HF fp32 | vs HF same dtype | "
          + ("vs lmforge eager | compile s | " if compiled else "") + "memory-bound limit | lmforge / limit | lmforge step tok/s | step / limit | same tokens |")
    print("|---|---:|---|" + ("---|" if compiled else "") + "---:|---:|---:|---:|---:|---:|"
          + ("---:|---:|" if compiled else "") + "---:|---:|---:|---:|---|")
    for r in rows:
        hf_same = "—" if r["hf_same"] is None else f"{r['hf_same']:,.0f}"
        vs_same = "—" if r["vs_same"] is None else f"{r['vs_same']:.2f}x"
        mode = f"{r['mode']} | " if compiled else ""
        extra = "" if not compiled else ("— | — | " if r["compile"] is None else
                                         f"{r['vs_eager']:.2f}x | {r['compile']:.0f} | ")
        print(f"| {r['size']} (random) | {r['params'] / 1e6:.1f}M | {r['dtype']} | {mode}{r['batch']} | {r['hf32']:,.0f} | "
              f"{hf_same} | {r['ours']:,.0f} | {r['vs_hf32']:.2f}x | {vs_same} | {extra}{r['limit']:,.0f} | "
              f"{r['ours'] / r['limit']:.0%} | {r['step']:,.0f} | {r['step'] / r['limit']:.0%} | {r['same']} |")


if __name__ == "__main__":
    main()
