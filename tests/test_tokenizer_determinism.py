"""Same corpus, same tokenizer file: two `lmforge tokenizer train` processes write byte-identical files
for every kind (WordPiece and Unigram are not reproducible in Hugging Face tokenizers itself)."""

import random
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.tokenizer import Tokenizer
from lmforge.vocab_training import canonical_unigram, wordpiece_vocab

DATA = Path(__file__).parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is absent (fresh clone)")


def train_in_subprocess(kind: str, corpus: Path, out: Path, vocab: int) -> bytes:
    subprocess.run([sys.executable, "-m", "lmforge", "tokenizer", "train", "--kind", kind, "--vocab-size", str(vocab),
                    "--out", str(out), "--errors", "replace", str(corpus)], check=True, capture_output=True, timeout=300)
    return (out / "tokenizer.json").read_bytes()


@needs_data
@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_two_training_runs_write_byte_identical_files(tmp_path, kind):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in sorted((DATA / "pretrain" / "state_union").glob("*.txt"))[:8]:
        (corpus / path.name).write_bytes(path.read_bytes())
    first = train_in_subprocess(kind, corpus, tmp_path / "a", 1200)
    second = train_in_subprocess(kind, corpus, tmp_path / "b", 1200)
    assert first == second
    tokenizer = Tokenizer.load(tmp_path / "a")
    text = "The State of the Union is strong, and the Congress agrees."
    assert tokenizer.decode(tokenizer.encode(text)).replace(" ", "") == text.replace(" ", "")


def test_wordpiece_vocab_does_not_depend_on_input_order_and_breaks_ties_by_text():
    counts = {"ab": 5, "cd": 5, "abcd": 1, "x": 3}
    shuffled = dict(random.Random(1).sample(list(counts.items()), len(counts)))
    vocab = wordpiece_vocab(counts, 20, ["[PAD]", "[UNK]"], min_frequency=1)
    assert vocab == wordpiece_vocab(shuffled, 20, ["[PAD]", "[UNK]"], min_frequency=1)
    assert list(vocab)[:2] == ["[PAD]", "[UNK]"]
    merges = list(vocab)[list(vocab).index("x") + 1:]
    merges = [t for t in merges if not t.startswith("##") or len(t) > 3]
    # ab and cd both occur 6 times: the tie goes to the smaller pair text (a, ##b) first
    assert merges[:2] == ["ab", "cd"]


def test_wordpiece_vocab_stops_at_min_frequency_and_at_the_size():
    counts = {"low": 5, "lower": 2, "newest": 6, "widest": 3}
    small = wordpiece_vocab(counts, 10_000, [], min_frequency=100)
    assert all(len(t.replace("##", "")) == 1 for t in small)  # no pair reaches 100: characters only
    sized = wordpiece_vocab(counts, 14, [], min_frequency=1)  # 11 characters and 3 merges
    assert len(sized) == 14 and "newest" not in sized
    assert len(wordpiece_vocab(counts, 10_000, [], min_frequency=1)) < 10_000  # every word whole: no pair left


def test_canonical_unigram_orders_ties_and_the_appended_characters():
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("▁the", -2.0000000000001), ("b", -5.0), ("a", -5.0),
              ("Q", -9.0001), ("[", -9.0002), ("$", -9.0002)]
    other = [("<pad>", 0.0), ("</s>", 0.0), ("▁the", -1.9999999999999), ("a", -5.0), ("b", -5.0),
             ("$", -9.0001), ("Q", -9.0002), ("[", -9.0002)]
    assert canonical_unigram(pieces, 2) == canonical_unigram(other, 2)
    assert [p for p, _ in canonical_unigram(pieces, 2)] == ["<pad>", "</s>", "▁the", "a", "b", "$", "Q", "["]
