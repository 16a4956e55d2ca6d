"""Greedy generation speed: lmforge `generate` vs Hugging Face `generate` on the same converted model.

Random GPT-2 and Llama-shaped (grouped-query attention, rotary, SwiGLU) models (Hugging Face, seeded)
are saved, converted with `lmforge.load`, and both
libraries generate exactly `--new-tokens` tokens (no EOS) in float32 on the CPU, at batch 1 and 8.
Prints tokens/s (new tokens x batch / seconds, best of `--repeats` interleaved runs) and the ratio,
beside the memory-bound limit (every weight read once per step at the measured read bandwidth), and
checks the two produced the same tokens.

    python bench/generate.py                 # every size below
    python bench/generate.py --sizes tiny smollm2-135m --repeats 5
"""

from __future__ import annotations

import argparse
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


def hf_model(size: str):
    import transformers

    (config_class, model_class, defaults), fields = SIZES[size]
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(**defaults, **fields)
    return getattr(transformers, model_class)(config).eval()


def best_times(fns, repeats: int) -> list[float]:
    """Fastest of `repeats` timed calls of each function, the calls interleaved (a, b, a, b, ...) so
    that both see the same machine when its load drifts; one untimed warm-up call each."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, record in zip(fns, times):
            start = time.perf_counter()
            fn()
            record.append(time.perf_counter() - start)
    return [min(record) for record in times]


def read_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes/s at which this machine streams a float32 array from memory (the fastest of `repeats` sums)."""
    data = torch.ones(megabytes * 2**20 // 4)
    return data.numel() * 4 / best_times([data.sum], repeats)[0]


def bound_tokens_per_s(model, batch: int, bandwidth: float) -> float:
    """The memory-bound limit of greedy decoding: each step must read every weight matrix once (the
    tied token embedding once, by the LM head; the position table aside, as it is read a row per
    token), so tokens/s <= batch * bandwidth / weight bytes. Small-batch CPU decoding is bound by it."""
    skipped = ("wpe.weight",)  # one row per token
    weights = sum(p.numel() * p.element_size() for name, p in model.named_parameters() if not name.endswith(skipped))
    return batch * bandwidth / weights


def main() -> None:
    import lmforge

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    bandwidth = read_bandwidth()
    rows = []
    for size in args.sizes:
        hf = hf_model(size)
        with tempfile.TemporaryDirectory() as folder:
            hf.save_pretrained(folder)
            ours = lmforge.load(folder).eval()
        for batch in args.batches:
            prompt = torch.randint(0, 49000, (batch, args.prompt_tokens), generator=torch.Generator().manual_seed(1))
            mask = torch.ones_like(prompt)
            n = args.new_tokens

            def run_hf():
                with torch.inference_mode():
                    return hf.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=n, do_sample=False,
                                       eos_token_id=None, pad_token_id=0)

            def run_ours():
                return lmforge.infer.generate(ours, prompt, mask, max_new_tokens=n, eos_token_id=[])

            same = torch.equal(run_hf(), run_ours())
            hf_s, ours_s = best_times([run_hf, run_ours], args.repeats)
            rows.append((size, sum(p.numel() for p in hf.parameters()), batch, n * batch / hf_s, n * batch / ours_s,
                         same, bound_tokens_per_s(hf, batch, bandwidth)))
            print(f"  {size} batch {batch}: hf {hf_s:.2f}s, lmforge {ours_s:.2f}s", flush=True)

    print(f"\ngreedy, {args.new_tokens} new tokens after {args.prompt_tokens}, float32, CPU, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; memory read bandwidth {bandwidth / 1e9:.1f} GB/s")
    print("| model | parameters | batch | HF tokens/s | lmforge tokens/s | speed-up | memory-bound limit | "
          "HF / limit | lmforge / limit | same tokens |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for size, params, batch, hf_rate, our_rate, same, bound in rows:
        print(f"| {size} (random) | {params / 1e6:.1f}M | {batch} | {hf_rate:,.0f} | {our_rate:,.0f} | "
              f"{our_rate / hf_rate:.2f}x | {bound:,.0f} | {hf_rate / bound:.0%} | {our_rate / bound:.0%} | "
              f"{'yes' if same else 'NO'} |")

if __name__ == "__main__":
    main()
