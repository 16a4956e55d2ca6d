"""Corpus preparation speed: `prepare_corpus` MB/s against the bare `encode_batch` of the same documents.

    python bench/prepare.py [--repeat N]

Uses the real GPT-2 vocabulary and the shared corpora (tinyshakespeare as blank-line documents plus the 65
State of the Union speeches). The ratio shows how much the streaming, splitting and writing cost on top of
the tokenizer's own multi-threaded batch encoding (1.00 = bound by the tokenizer).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "src"))

from lmforge.data import iter_documents, prepare_corpus  # noqa: E402
from lmforge.tokenizer import Tokenizer  # noqa: E402

DATA = Path(__file__).parents[2] / "shared" / "data"


def gpt2_tokenizer(folder: Path) -> Tokenizer:
    shutil.copy(DATA / "tokenizers" / "gpt2-vocab.json", folder / "vocab.json")
    shutil.copy(DATA / "tokenizers" / "gpt2-merges.txt", folder / "merges.txt")
    return Tokenizer.load(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: the benchmark needs the shared corpora")
    inputs = [DATA / "pretrain" / "tinyshakespeare.txt", DATA / "pretrain" / "state_union"]
    options = {"blank_line_docs": True, "errors": "replace"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "tok").mkdir()
        tokenizer = gpt2_tokenizer(tmp / "tok")
        documents = list(iter_documents(inputs, **options))
        megabytes = sum(d.nbytes for d in documents) / 1e6
        texts = [d.text for d in documents]

        def bare() -> None:
            for start in range(0, len(texts), 2000):
                [e.ids for e in tokenizer.backend.encode_batch(texts[start:start + 2000], add_special_tokens=False)]

        def prepare() -> None:
            prepare_corpus(inputs, tokenizer, tmp / "out", progress=False, **options)

        rows = []
        for name, run in (("encode_batch + .ids only (in memory)", bare), ("lmforge prepare (read+encode+write)", prepare)):
            best = min(_timed(run) for _ in range(args.repeat))
            rows.append((name, best, megabytes / best))
    print(f"corpus: {len(documents):,} documents, {megabytes:.2f} MB, GPT-2 vocabulary\n")
    print(f"{'step':<38} {'seconds':>8} {'MB/s':>8} {'vs encode':>10}")
    for name, seconds, speed in rows:
        print(f"{name:<38} {seconds:>8.2f} {speed:>8.2f} {speed / rows[0][2]:>10.2f}")


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
