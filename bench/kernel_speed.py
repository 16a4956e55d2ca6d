"""One-row matrix products alone: how fast each CPU kernel torch offers reads a weight matrix, against the
machine's read bandwidth (what bounds batch-1 decoding).

For the matrices one decoding step of a GPT-2-shaped model multiplies (fused q+kv, o, up, down, the vocabulary
projection) it times one row through: float32 `F.linear` on the (out, in) matrix and `x @ W^T` from a
transposed (in, out) copy (what lmforge's batch-1 decoding reads, `nn.decoding_linear`); int8 per-channel codes
through fbgemm's dynamic int8 x int8 kernel (`quantized.linear_dynamic`, lmforge's `int8-dynamic`), torch's
weight-only kernel `_weight_int8pack_mm` with bf16 activations (lmforge's `int8`) and with float32 ones.
Each matrix is cycled through enough distinct copies (~`--megabytes` in all) that none stays in the caches,
as in a real step; GB/s counts the bytes of the weights in that format; `limit` is the measured bandwidth.

    python bench/kernel_speed.py --sizes small gpt2 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from generate import read_bandwidth  # bench/generate.py, beside this script

SIZES = {"small": 384, "gpt2": 768}  # d_model of bench/generate.py's GPT-2 shapes (vocab 50257)
VOCAB = 50257


def shapes(d: int) -> dict[str, tuple[int, int]]:
    """name -> (out, in) of the matrices one decoding step multiplies."""
    return {"q+kv": (3 * d, d), "o": (d, d), "up": (4 * d, d), "down": (d, 4 * d), "vocabulary": (VOCAB, d)}


def kernels(weight: torch.Tensor) -> dict[str, tuple[callable, int]]:
    """name -> (a function of one row x (1, in), bytes of the weights it reads) for one (out, in) matrix."""
    out_features = weight.shape[0]
    scale = weight.abs().amax(1) / 127
    codes = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (out, in)
    with warnings.catch_warnings():  # the quantized-tensor constructors warn that they are deprecated
        warnings.simplefilter("ignore")
        quantized = torch._make_per_channel_quantized_tensor(codes, scale.double(), torch.zeros(out_features,
                                                                                                 dtype=torch.long), 0)
        packed = torch.ops.quantized.linear_prepack(quantized, None)
    transposed = weight.t().contiguous()  # (in, out)
    scale_bf16 = scale.to(torch.bfloat16)
    n = weight.numel()
    return {
        "fp32 F.linear": (lambda x: F.linear(x, weight), 4 * n),
        "fp32 x @ W^T copy": (lambda x: x @ transposed, 4 * n),
        "int8 fbgemm dynamic": (lambda x: torch.ops.quantized.linear_dynamic(x, packed, True), n),
        "int8 _weight_int8pack_mm bf16": (lambda x: torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), codes,
                                                                                        scale_bf16), n),
        "int8 _weight_int8pack_mm fp32": (lambda x: torch.ops.aten._weight_int8pack_mm(x, codes, scale), n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--megabytes", type=int, default=96, help="float32 megabytes of copies of each matrix")
    parser.add_argument("--repeats", type=int, default=7, help="passes over the copies (the median is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or torch.get_num_threads())
    bandwidth = read_bandwidth()
    print(f"one row, CPU ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; read bandwidth {bandwidth / 1e9:.1f} GB/s (measured); medians of {args.repeats} "
          "passes over distinct copies")
    print("| size | matrix (out x in) | kernel | us per product | GB/s of weights | of the bandwidth |")
    print("|---|---|---|---:|---:|---:|")
    torch.manual_seed(0)
    with torch.inference_mode():
        for size in args.sizes:
            for name, (out_features, in_features) in shapes(SIZES[size]).items():
                copies = max(2, args.megabytes * 2**20 // (4 * out_features * in_features))
                sets = [kernels(torch.randn(out_features, in_features)) for _ in range(copies)]
                x = torch.randn(1, in_features)
                for kernel in sets[0]:
                    for functions in sets[:2]:
                        functions[kernel][0](x)  # warm-up
                    seconds = []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        for functions in sets:
                            functions[kernel][0](x)
                        seconds.append((time.perf_counter() - start) / copies)
                    per_product = statistics.median(seconds)
                    rate = sets[0][kernel][1] / per_product
                    print(f"| {size} | {name} ({out_features} x {in_features}) | {kernel} | {per_product * 1e6:,.0f} | "
                          f"{rate / 1e9:.1f} | {rate / bandwidth:.0%} |", flush=True)


if __name__ == "__main__":
    main()
