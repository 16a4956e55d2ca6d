"""Tiny checkpoints with trained tokenizers for the server tests, and a real `lmforge serve` subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import torch

import lmforge
from lmforge.tokenizer import train_tokenizer

SENTENCES = ["the cat sat on the mat .", "a good film with a great cast .", "John Smith lives in New York .",
             "Mary Jones works in Paris .", "the dog sat on the rug .", "café déjà vu naïve — ünïcödé ✓"] * 4


def tiny_checkpoints(root: Path) -> dict[str, Path]:
    """Save a causal LM, a BART and a T5 (byte-level BPE) and a masked LM, classifier, tagger and embedder
    (WordPiece)."""
    bpe = train_tokenizer("bpe", 350, iter(SENTENCES), min_frequency=1)
    wordpiece = train_tokenizer("wordpiece", 150, iter(SENTENCES), min_frequency=1)
    torch.manual_seed(0)
    specials = dict(vocab_size=bpe.vocab_size, pad_token_id=bpe.pad_id, bos_token_id=bpe.bos_id,
                    eos_token_id=bpe.eos_id)
    models = {
        "gpt": (lmforge.build_model(lmforge.presets.get("tiny-gpt2").replace(
            **specials, init_std=0.3, tie_embeddings=False, max_positions=1024)), bpe),
        "slow": (lmforge.build_model(lmforge.presets.get("tiny-gpt2").replace(  # long generations, for cancelling
            **specials, d_model=256, n_layers=4, d_ff=1024, max_positions=4096)), bpe),
        "bart": (lmforge.build_model(lmforge.presets.get("tiny-bart").replace(
            **specials, decoder_start_token_id=bpe.eos_id, mask_token_id=None, init_std=0.1,
            tie_embeddings=False, max_positions=64)), bpe),
        "t5": (lmforge.build_model(lmforge.presets.get("tiny-t5").replace(
            **specials, decoder_start_token_id=bpe.pad_id, init_std=0.5)), bpe),
    }

    def encoder(task, **changes):
        config = lmforge.presets.get("tiny-bert").replace(
            vocab_size=wordpiece.vocab_size, max_positions=32, pad_token_id=wordpiece.pad_id,
            mask_token_id=wordpiece.mask_id, **changes)
        return lmforge.build_model(config, task), wordpiece

    models["mlm"] = encoder("masked-lm")
    models["classifier"] = encoder("sequence-classification", id2label={0: "neg", 1: "pos"})
    models["tagger"] = encoder("token-classification", num_labels=3, id2label={0: "O", 1: "B-PER", 2: "I-PER"})
    models["embedder"] = encoder("embedding")
    paths = {}
    for name, (model, tokenizer) in models.items():
        model.attach_tokenizer(tokenizer)
        paths[name] = model.save(root / name)
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`lmforge serve ARGS` as a real subprocess on a free port; waits until /health answers 200."""

    def __init__(self, *args: str, env: dict | None = None, timeout: float = 120):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self.log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty server never blocks on it
        self.process = subprocess.Popen([sys.executable, "-m", "lmforge", "serve", *args, "--port", str(self.port)],
                                        stdout=self.log, stderr=subprocess.STDOUT, text=True, env=environment)
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.process.kill()  # never leave a server behind
            self.process.wait()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}: {self.output()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become healthy")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.output()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def metric(self, name: str, headers: dict | None = None) -> float:
        """The value of one metric line (first match, labels included in `name`)."""
        text = requests.get(self.url + "/metrics", headers=headers, timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0
