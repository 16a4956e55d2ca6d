"""Small labelled files and a tokenizer for fine-tuning and evaluation tests (no shared data needed)."""

from __future__ import annotations

import random
from pathlib import Path

from lmforge.tokenizer import train_tokenizer

GOOD = ["good", "great", "fine", "lovely", "superb"]
BAD = ["bad", "awful", "poor", "dull", "weak"]
FILLER = ["the", "film", "was", "a", "plot", "story", "and", "very", "actors", "music", "quite", "it"]
PEOPLE = ["alice", "bob", "carol"]
PLACES = ["paris", "rome", "oslo"]


def sentiment_lines(count: int, seed: int) -> list[str]:
    """`label text` lines: label 1 when the sentence holds a word of GOOD, 0 for BAD."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        label = i % 2
        words = rng.sample(FILLER, 4) + [rng.choice(GOOD if label else BAD)]
        rng.shuffle(words)
        lines.append(f"{label} {' '.join(words)}")
    return lines


def tagged_sentences(count: int, seed: int) -> list[list[tuple[str, str]]]:
    """Sentences of (word, BIO tag): PER for names in PEOPLE, LOC for PLACES (two-word LOC spans too)."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        words = [(w, "O") for w in rng.sample(FILLER, 3)]
        words.insert(rng.randrange(len(words) + 1), (rng.choice(PEOPLE), "B-PER"))
        place = rng.choice(PLACES)
        words += [(place, "B-LOC"), ("city", "I-LOC")] if rng.random() < 0.5 else [(place, "B-LOC")]
        sentences.append(words)
    return sentences


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    return write_lines(path, ["\n".join(f"{w}\t{t}" for w, t in s) + "\n" for s in sentences])


def vocabulary_text() -> list[str]:
    words = GOOD + BAD + FILLER + PEOPLE + PLACES + ["city"]
    return [" ".join(words)] * 20


def wordpiece_tokenizer(folder: Path):
    """A small uncased WordPiece tokenizer (BERT specials) saved in `folder`."""
    tokenizer = train_tokenizer("wordpiece", 120, iter(vocabulary_text()), lowercase=True, min_frequency=1)
    tokenizer.save(folder)
    return tokenizer


def bpe_tokenizer(folder: Path):
    """A small byte-level BPE tokenizer (GPT-2 specials) saved in `folder`."""
    tokenizer = train_tokenizer("bpe", 300, iter(vocabulary_text()), min_frequency=1)
    tokenizer.save(folder)
    return tokenizer


def labelled_files(root: Path, tag_train: int = 96, tag_valid: int = 30) -> dict:
    """A WordPiece tokenizer folder and sentiment / CoNLL train and valid files under `root`."""
    return {"root": root, "tok": root / "tok", "tokenizer": wordpiece_tokenizer(root / "tok"),
            "train": write_lines(root / "train.txt", sentiment_lines(96, seed=1)),
            "valid": write_lines(root / "valid.txt", sentiment_lines(40, seed=2)),
            "tag_train": write_conll(root / "train.conll", tagged_sentences(tag_train, seed=3)),
            "tag_valid": write_conll(root / "valid.conll", tagged_sentences(tag_valid, seed=4))}
