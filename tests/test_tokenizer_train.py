"""Tokenizer training: the three families' special tokens, lossless byte-level BPE, files, bad input."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.cli import main
from lmforge.errors import DataError
from lmforge.tokenizer import Tokenizer, train_tokenizer

DATA = Path(__file__).parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is absent (fresh clone)")


def shakespeare(chars: int = 60_000) -> list[str]:
    text = (DATA / "pretrain" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:chars]
    return [text[i:i + 2000] for i in range(0, len(text), 2000)]


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer("bpe", 500, iter(shakespeare()))


@needs_data
@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_byte_level_bpe_round_trips_any_text(bpe, text):
    assert bpe.decode(bpe.encode(text), skip_special_tokens=False) == text


@needs_data
def test_byte_level_bpe_round_trips_real_text(bpe):
    speech = (DATA / "pretrain" / "state_union" / "2006-GWBush.txt").read_text(encoding="utf-8")
    assert bpe.decode(bpe.encode(speech)) == speech
    assert len(bpe.encode(speech)) < 0.7 * len(speech.encode("utf-8"))  # merges were learned, not just bytes


@needs_data
def test_bpe_specials_are_gpt2_like(bpe):
    assert bpe.vocab_size == 500
    assert bpe.bos_id == bpe.eos_id == bpe.token_to_id("<|endoftext|>")
    assert bpe.pad_id == bpe.token_to_id("<|pad|>") and bpe.pad_id != bpe.eos_id
    assert bpe.special_ids == {bpe.eos_id, bpe.pad_id}
    assert bpe.encode("hello <|endoftext|>")[-1] == bpe.eos_id  # the special string maps to one id


@needs_data
def test_wordpiece_is_bert_like():
    tok = train_tokenizer("wordpiece", 400, iter(shakespeare()), lowercase=True)
    assert [tok.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    ids = tok.encode("First Citizen")
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
    assert tok.decode(ids) == "first citizen"
    pair = tok.backend.encode("you are", "all resolved")
    assert pair.ids.count(tok.sep_id) == 2 and pair.type_ids[-1] == 1 and pair.type_ids[0] == 0
    starts = tok.word_starts()
    assert not starts[next(i for t, i in tok.backend.get_vocab().items() if t.startswith("##"))]


@needs_data
def test_unigram_is_t5_like_with_sentinels():
    tok = train_tokenizer("unigram", 400, iter(shakespeare(30_000)))
    assert tok.vocab_size == 400
    assert [tok.id_to_token(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    sentinels = tok.sentinel_ids
    assert len(sentinels) == 100 and sentinels[0] == 399 and sentinels[-1] == 300  # as T5: <extra_id_0> last
    assert tok.encode("First Citizen")[-1] == tok.eos_id
    assert tok.decode(tok.encode("First Citizen")) == "First Citizen"
    assert set(sentinels) <= tok.special_ids


@needs_data
def test_extra_special_roles_and_save_load_keep_the_fingerprint(tmp_path):
    tok = train_tokenizer("bpe", 400, iter(shakespeare(20_000)), specials={"mask": "<mask>"})
    assert tok.mask_id is not None
    tok.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert again.specials == tok.specials and again.fingerprint == tok.fingerprint
    assert again.encode("To be, or not") == tok.encode("To be, or not")
    other = train_tokenizer("bpe", 401, iter(shakespeare(20_000)), specials={"mask": "<mask>"})
    assert other.fingerprint != tok.fingerprint


@needs_data
@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_save_load_keeps_the_fingerprint_of_every_kind(tmp_path, kind):
    # unigram scores lose their last float digit in tokenizer.json; the fingerprint must not care
    tok = train_tokenizer(kind, 600, iter(shakespeare(20_000)))
    tok.save(tmp_path)
    assert Tokenizer.load(tmp_path).fingerprint == tok.fingerprint


@needs_data
def test_trains_from_files_folders_and_gz(tmp_path):
    import gzip

    (tmp_path / "a.txt").write_text("the king is dead\n" * 50, encoding="utf-8")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write('{"body": "long live the queen"}\n' * 50)
    tok = train_tokenizer("wordpiece", 120, [tmp_path], text_options={"text_field": "body"})
    assert tok.token_to_id("queen") is not None and tok.token_to_id("king") is not None


def test_gpt2_vocab_and_merges_load_like_hugging_face(tmp_path):
    folder = DATA / "tokenizers"
    if not folder.is_dir():
        pytest.skip("../shared/data is absent (fresh clone)")
    transformers = pytest.importorskip("transformers")
    (tmp_path / "vocab.json").write_bytes((folder / "gpt2-vocab.json").read_bytes())
    (tmp_path / "merges.txt").write_bytes((folder / "gpt2-merges.txt").read_bytes())
    ours = Tokenizer.load(tmp_path)
    oracle = transformers.GPT2TokenizerFast.from_pretrained(str(tmp_path))
    text = "Hello world! It's 2024 — naïve café, 日本語.\n  Indented <|endoftext|>"
    assert ours.encode(text) == oracle(text)["input_ids"]
    assert ours.vocab_size == 50257 and ours.eos_id == 50256
    assert ours.decode(ours.encode(text), skip_special_tokens=False) == text


# ---- bad input -------------------------------------------------------------------------------------------------
@needs_data
def test_vocab_too_small_for_specials():
    with pytest.raises(DataError, match="too small"):
        train_tokenizer("unigram", 90, iter(shakespeare(5_000)))  # 100 sentinels alone do not fit
    with pytest.raises(DataError, match="too small"):
        train_tokenizer("bpe", 200, iter(shakespeare(5_000)))  # 256 byte symbols do not fit


def test_empty_inputs(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no text"):
        train_tokenizer("bpe", 300, [tmp_path / "empty.txt"])
    with pytest.raises(DataError, match="no input files"):
        train_tokenizer("bpe", 300, [])
    with pytest.raises(DataError, match="does not exist"):
        train_tokenizer("bpe", 300, [tmp_path / "missing.txt"])


def test_non_utf8_names_file_and_line_and_cli_leaves_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good line\nsecond \xff line\n")
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--kind", "bpe", "--vocab-size", "300", "--out", str(out), str(bad)]) == 2
    error = capsys.readouterr().err
    assert f"{bad}:2" in error and "--errors replace" in error and "Traceback" not in error
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]
    assert main(["tokenizer", "train", "--kind", "bpe", "--vocab-size", "300", "--out", str(out), str(bad),
                 "--errors", "replace"]) == 0
    assert Tokenizer.load(out).vocab_size <= 300
