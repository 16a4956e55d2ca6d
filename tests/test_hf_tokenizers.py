"""Tokenizers read from Hugging Face files give the same ids as the reference implementations on a
paragraph of mixed text: GPT-2 vocab.json + merges.txt, a BERT WordPiece vocab.txt, T5's spiece.model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import lmforge
from lmforge.checkpoint.hf import load_hf_tokenizer

transformers = pytest.importorskip("transformers")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PARAGRAPH = ("  The café's 3 naïve Zürich-based ÉCOLE owners paid €1,234.56 (≈ $1.3k) on 2024-03-15!!\n"
             "\tTabs,\u00a0non-breaking spaces, and   runs of   spaces; 日本語のテキスト, emoji 🤖🚀, "
             "Ελληνικά, русский, العربية. Numbers: 007, 3.14159, 1e-9, 42nd; contractions: don't, we'll, I'M.\n\n"
             "Mixed CASE wOrDs and ﬁ ligatures ½ ① — em-dashes… end.  ")


def shakespeare() -> Path:
    path = DATA / "pretrain" / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared data folder is not next to this clone)")
    return path


def test_gpt2_vocab_and_merges_match_hugging_face(tmp_path):
    folder = DATA / "tokenizers"
    if not (folder / "gpt2-vocab.json").is_file():
        pytest.skip(f"{folder} is absent (the shared data folder is not next to this clone)")
    shutil.copy(folder / "gpt2-vocab.json", tmp_path / "vocab.json")
    shutil.copy(folder / "gpt2-merges.txt", tmp_path / "merges.txt")
    ours = load_hf_tokenizer(tmp_path)
    theirs = transformers.GPT2Tokenizer.from_pretrained(tmp_path)
    expected = theirs(PARAGRAPH)["input_ids"]
    assert len(expected) > 100 and ours.encode(PARAGRAPH) == expected
    assert ours.decode(expected) == PARAGRAPH
    assert ours.eos_id == 50256 and ours.vocab_size == 50257


@pytest.fixture(scope="module")
def bert_vocab(tmp_path_factory) -> Path:
    """A WordPiece vocab.txt (1,500 entries) trained on Shakespeare."""
    from tokenizers import BertWordPieceTokenizer

    folder = tmp_path_factory.mktemp("wordpiece")
    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train([str(shakespeare())], vocab_size=1500, show_progress=False)
    trainer.save_model(str(folder))  # writes vocab.txt only
    return folder / "vocab.txt"


def test_bert_wordpiece_vocab_matches_hugging_face(tmp_path, bert_vocab):
    shutil.copy(bert_vocab, tmp_path / "vocab.txt")
    ours = load_hf_tokenizer(tmp_path)
    theirs = transformers.BertTokenizer.from_pretrained(tmp_path)
    expected = theirs(PARAGRAPH)["input_ids"]
    assert len(expected) > 100 and ours.encode(PARAGRAPH) == expected
    assert ours.encode_batch(["first", "second one"]) == theirs(["first", "second one"])["input_ids"]
    assert (ours.cls_id, ours.sep_id, ours.mask_id) == (theirs.cls_token_id, theirs.sep_token_id, theirs.mask_token_id)


def test_t5_sentencepiece_matches_sentencepiece(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    spm.SentencePieceTrainer.train(input=str(shakespeare()), model_prefix=str(tmp_path / "spiece"), vocab_size=400,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   input_sentence_size=20000, minloglevel=2)
    ours = load_hf_tokenizer(tmp_path)
    reference = spm.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
    for text in (PARAGRAPH, "To be, or not to be:  that is the question.", "  leading and trailing  "):
        assert ours.encode(text) == reference.encode(text) + [reference.eos_id()]
    assert (ours.pad_id, ours.eos_id, ours.unk_id) == (0, 1, 2)


def test_load_brings_the_tokenizer_of_a_hugging_face_folder(tmp_path, bert_vocab):
    config = transformers.BertConfig(vocab_size=1500, hidden_size=12, num_attention_heads=3, num_hidden_layers=1,
                                     intermediate_size=16, max_position_embeddings=64)
    transformers.BertForMaskedLM(config).save_pretrained(tmp_path)
    shutil.copy(bert_vocab, tmp_path / "vocab.txt")
    model = lmforge.load(tmp_path)
    assert model.tokenizer is not None and model.tokenizer.mask_id == model.config.mask_token_id
    assert model.tokenizer.encode("to be or not") == transformers.BertTokenizer.from_pretrained(tmp_path)(
        "to be or not")["input_ids"]


def test_a_folder_without_tokenizer_files_has_none(tmp_path):
    assert load_hf_tokenizer(tmp_path) is None
