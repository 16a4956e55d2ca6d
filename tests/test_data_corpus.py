"""Corpus preparation: documents, splits, shards, formats, and bad input leaving nothing behind."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from lmforge.cli import main
from lmforge.data import TokenShards, prepare_corpus
from lmforge.data.corpus import token_dtype
from lmforge.errors import DataError
from lmforge.tokenizer import train_tokenizer

DATA = Path(__file__).parents[2] / "shared" / "data"
STATE_UNION = DATA / "pretrain" / "state_union"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is absent (fresh clone)")


@pytest.fixture(scope="module")
def bpe():
    texts = ["the quick brown fox jumps over the lazy dog. " * 20, "Fourscore and seven years ago. " * 20]
    return train_tokenizer("bpe", 300, iter(texts))


def folder_listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


@needs_data
def test_state_union_folder_gives_65_documents_and_decodes_back(bpe, tmp_path):
    index = prepare_corpus([STATE_UNION], bpe, tmp_path / "su", valid_fraction=0.05, errors="replace", progress=False)
    assert index["documents"] == 65
    assert (index["train"]["documents"], index["valid"]["documents"]) == (62, 3)
    shards = TokenShards(tmp_path / "su")
    assert shards.train.dtype == np.uint16 and isinstance(shards.train, np.memmap)
    assert len(shards.train) == index["train"]["tokens"] and shards.train_docs[-1] == len(shards.train)
    assert shards.tokenizer_hash == bpe.fingerprint
    shards.check_tokenizer(bpe)
    first = next(shards.documents("train"))
    assert first[-1] == bpe.eos_id  # every document ends with the separator
    original = (STATE_UNION / "1945-Truman.txt").read_text(encoding="utf-8", errors="replace").rstrip("\n")
    assert bpe.decode(first[:-1]) == original
    assert shards.tokenizer.fingerprint == bpe.fingerprint


@needs_data
def test_non_utf8_corpus_names_file_and_line_and_leaves_no_folder(bpe, tmp_path, capsys):
    bpe.save(tmp_path / "tok")
    out = tmp_path / "shards"
    code = main(["prepare", "--tokenizer", str(tmp_path / "tok"), "--out", str(out), "--quiet", str(STATE_UNION)])
    error = capsys.readouterr().err
    assert code == 2 and "1954-Eisenhower.txt:101" in error and "--errors replace" in error
    assert folder_listing(tmp_path) == ["tok"]


def test_jsonl_gz_and_blank_line_documents(bpe, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("first doc\nstill first\n\n\nsecond doc\n\nthird doc\n", encoding="utf-8")
    with gzip.open(tmp_path / "in" / "b.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"body": "fourth"}) + "\n\n" + json.dumps({"body": "fifth"}) + "\n")
    (tmp_path / "in" / "notes.bin").write_bytes(b"\x00ignored")  # not a corpus file: skipped in folders
    index = prepare_corpus([tmp_path / "in"], bpe, tmp_path / "out", blank_line_docs=True, text_field="body",
                           valid_fraction=0.0, progress=False)
    shards = TokenShards(tmp_path / "out")
    texts = [bpe.decode(doc[:-1]) for doc in shards.documents()]
    assert texts == ["first doc\nstill first", "second doc", "third doc", "fourth", "fifth"]
    assert index["documents"] == 5 and len(shards.valid) == 0


def test_few_documents_split_validation_by_tokens(bpe, tmp_path):
    (tmp_path / "one.txt").write_text("word " * 1000, encoding="utf-8")
    index = prepare_corpus([tmp_path / "one.txt"], bpe, tmp_path / "out", valid_fraction=0.1, progress=False)
    shards = TokenShards(tmp_path / "out")
    total = index["train"]["tokens"] + index["valid"]["tokens"]
    assert index["valid"]["tokens"] == int(total * 0.1) > 0
    whole = np.concatenate([shards.train, shards.valid])
    assert bpe.decode(whole[:-1]) == "word " * 1000  # the tail of the one document moved to valid


def test_valid_split_is_evenly_spread_and_exact(bpe, tmp_path):
    for i in range(40):
        (tmp_path / f"d{i:02}.txt").write_text(f"document {i}", encoding="utf-8")
    index = prepare_corpus([tmp_path], bpe, tmp_path.parent / "split-out", valid_fraction=0.1, progress=False)
    shards = TokenShards(tmp_path.parent / "split-out")
    assert index["valid"]["documents"] == 4
    assert [bpe.decode(d[:-1]) for d in shards.documents("valid")] == [f"document {i}" for i in (9, 19, 29, 39)]


def test_token_dtype_widens_for_large_vocabularies():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_other_tokenizer_is_refused(bpe, tmp_path):
    (tmp_path / "a.txt").write_text("some text", encoding="utf-8")
    prepare_corpus([tmp_path / "a.txt"], bpe, tmp_path / "out", progress=False)
    other = train_tokenizer("bpe", 280, iter(["other text entirely"] * 5))
    with pytest.raises(DataError, match="another tokenizer"):
        TokenShards(tmp_path / "out").check_tokenizer(other)


# ---- bad input -------------------------------------------------------------------------------------------------
def test_jsonl_without_text_field_names_file_and_line(bpe, tmp_path):
    data = tmp_path / "c.jsonl"
    data.write_text('{"text": "fine"}\n{"body": "wrong field"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.jsonl:2: no 'text' field .*--text-field"):
        prepare_corpus([data], bpe, tmp_path / "out", progress=False)
    assert folder_listing(tmp_path) == ["c.jsonl"]


def test_empty_inputs_fail_without_output(bpe, tmp_path):
    (tmp_path / "e.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataError, match="hold no text"):
        prepare_corpus([tmp_path / "e.txt"], bpe, tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="does not exist"):
        prepare_corpus([tmp_path / "nope"], bpe, tmp_path / "out", progress=False)
    assert folder_listing(tmp_path) == ["e.txt"]


def test_failed_prepare_keeps_the_previous_output(bpe, tmp_path):
    (tmp_path / "a.txt").write_text("good text", encoding="utf-8")
    prepare_corpus([tmp_path / "a.txt"], bpe, tmp_path / "out", progress=False)
    (tmp_path / "b.txt").write_bytes(b"bad \xfe")
    with pytest.raises(DataError, match="b.txt:1"):  # replacing earlier shards needs overwrite (issue 19)
        prepare_corpus([tmp_path / "b.txt"], bpe, tmp_path / "out", progress=False, overwrite=True)
    assert TokenShards(tmp_path / "out").index["documents"] == 1


def test_corrupt_shards_are_reported(bpe, tmp_path):
    (tmp_path / "a.txt").write_text("good text", encoding="utf-8")
    prepare_corpus([tmp_path / "a.txt"], bpe, tmp_path / "out", progress=False)
    with open(tmp_path / "out" / "train.bin", "ab") as handle:
        handle.write(b"\0\0")
    with pytest.raises(DataError, match="wrong size"):
        TokenShards(tmp_path / "out")
    with pytest.raises(DataError, match="not a prepared corpus"):
        TokenShards(tmp_path)
