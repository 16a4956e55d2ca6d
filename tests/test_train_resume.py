"""Exact resume: a `lmforge pretrain` process killed with SIGKILL mid-run and resumed with --resume
logs the same losses and ends with bitwise the same weights as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lmforge.data import prepare_corpus
from lmforge.tokenizer import train_tokenizer

ROOT = Path(__file__).parents[1]
WORDS = ("the king queen speaks to a lord of france and england with love hate war peace night day "
         "my good friend will come tomorrow before the battle upon the field where we stand").split()


def write_corpus(path: Path, documents: int = 400) -> None:
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))) + "." for _ in range(documents)]
    path.write_text("\n\n".join(lines) + "\n", encoding="utf-8")


def write_shards(folder: Path, tokenizer_kind: str, documents: int = 150) -> Path:
    """A small random-word corpus in `folder`, a 300-token tokenizer of `tokenizer_kind` trained on it, and
    its token shards; returns the shards folder."""
    write_corpus(folder / "corpus.txt", documents=documents)
    tokenizer = train_tokenizer(tokenizer_kind, 300, [folder / "corpus.txt"])
    prepare_corpus([folder / "corpus.txt"], tokenizer, folder / "shards", blank_line_docs=True, progress=False)
    return folder / "shards"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(folder / "corpus.txt")
    tokenizer = train_tokenizer("bpe", 300, [folder / "corpus.txt"])
    tokenizer.save(folder / "tok")
    prepare_corpus([folder / "corpus.txt"], tokenizer, folder / "shards", blank_line_docs=True,
                   valid_fraction=0.05, progress=False)
    config = {"family": "decoder", "vocab_size": 300, "d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64,
              "max_positions": 64, "dropout": 0.1, "attention_dropout": 0.1}
    (folder / "arch.json").write_text(json.dumps(config))
    return folder


def pretrain_command(folder: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmforge", "pretrain", "--config", str(folder / "arch.json"),
            "--data", str(folder / "shards"), "--out", str(out), "--max-steps", "30", "--batch-size", "4",
            "--seq-len", "32", "--lr", "3e-3", "--warmup-steps", "3", "--log-every", "1", "--eval-every", "10",
            "--eval-batches", "2", "--save-every", "5", "--quiet", "--no-codecarbon", *extra]


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def records(run: Path, key: str) -> list[tuple]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r[key]) for r in map(json.loads, lines) if key in r]


def last_logged_step(run: Path) -> int:
    try:
        return max((step for step, _ in records(run, "loss")), default=0)
    except (FileNotFoundError, ValueError):
        return 0


def test_killed_run_resumes_bitwise_identically(shards, tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    subprocess.run(pretrain_command(shards, straight), env=environment(), check=True, timeout=300)

    process = subprocess.Popen(pretrain_command(shards, broken), env=environment())
    deadline = time.monotonic() + 240
    while last_logged_step(broken) < 13 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)  # a real crash: no cleanup, no final checkpoint
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (broken / "final").exists()
    killed_at = last_logged_step(broken)
    checkpoint_step = json.loads((broken / "checkpoints/last/trainer_state.json").read_text())["step"]
    assert 10 <= checkpoint_step < killed_at < 30

    resumed = subprocess.run(pretrain_command(shards, broken, "--resume"), env=environment(), timeout=300,
                             capture_output=True, text=True)
    assert resumed.returncode == 2 and "--resume continues the run" in resumed.stderr  # flags may not change
    subprocess.run([sys.executable, "-m", "lmforge", "pretrain", "--out", str(broken), "--resume", "--quiet",
                    "--no-codecarbon"], env=environment(), check=True, timeout=300)

    for key in ("loss", "grad_norm", "eval_loss"):
        assert records(broken, key) == records(straight, key), key
    assert len(records(straight, "loss")) == 30
    a = load_file(str(straight / "final" / "model.safetensors"))
    b = load_file(str(broken / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)  # bitwise
    summary = json.loads((broken / "summary.json").read_text())
    assert summary["steps"] == 30 and summary["tokens"] == 30 * 4 * 32
