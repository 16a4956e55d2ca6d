"""Labelled readers: CoNLL alignment on WNUT-17, SST-2 and CSV/TSV/JSONL classification, parallel text, errors."""

from pathlib import Path

import pytest

from lmforge.data import LabelSet, collate, labelled_batches, read_classification, read_conll, read_parallel
from lmforge.errors import DataError
from lmforge.tokenizer import train_tokenizer

DATA = Path(__file__).parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is absent (fresh clone)")


@pytest.fixture(scope="module")
def wordpiece():
    text = "the movie was great , funny and sad ; a film about people in new york . " * 30
    return train_tokenizer("wordpiece", 150, iter([text]), lowercase=True)


@needs_data
def test_conll_first_sub_token_alignment_on_wnut17(wordpiece):
    data = read_conll(DATA / "ner" / "wnut17.train.conll", wordpiece)
    assert len(data.examples) == 3394
    assert data.labels.names[0] == "O" and len(data.labels) == 13  # O + B-/I- of 6 entity types
    sentences, current = [], []
    for line in (DATA / "ner" / "wnut17.train.conll").read_text(encoding="utf-8").splitlines():
        if line.strip():
            current.append(line.split("\t"))
        elif current:
            sentences.append(current)
            current = []
    checked = 0
    for example, sentence in zip(data.examples, sentences):
        encoding = wordpiece.backend.encode([w for w, _ in sentence], is_pretokenized=True)
        assert example["input_ids"] == encoding.ids
        for position, word in enumerate(encoding.word_ids):
            first = word is not None and (position == 0 or encoding.word_ids[position - 1] != word)
            expected = data.labels.id(sentence[word][1]) if first else -100
            assert example["labels"][position] == expected
            checked += first
    assert checked > 40_000  # every word that produced a token got its tag once


@needs_data
def test_unseen_label_at_evaluation_names_file_and_line(wordpiece, tmp_path):
    train = read_conll(DATA / "ner" / "wnut17.train.conll", wordpiece)
    dev = read_conll(DATA / "ner" / "wnut17.dev.conll", wordpiece, train.labels)
    assert dev.labels == train.labels
    bad = tmp_path / "dev.conll"
    bad.write_text("Paris\tB-location\nrocks\tB-city\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dev\.conll:2: label 'B-city' was not in the training data"):
        read_conll(bad, wordpiece, train.labels)


@needs_data
def test_sst2_label_text_lines(wordpiece):
    data = read_classification(DATA / "classification" / "sst2.dev.txt", wordpiece)
    assert len(data.examples) == 872 and data.labels.names == ["0", "1"]
    first = (DATA / "classification" / "sst2.dev.txt").read_text(encoding="utf-8").splitlines()[0]
    assert data.examples[0]["labels"] == int(first[0])
    assert data.examples[0]["input_ids"] == wordpiece.encode(first[2:])


def test_csv_tsv_jsonl_pairs_and_label_round_trip(wordpiece, tmp_path):
    (tmp_path / "a.csv").write_text('premise,hypothesis,label\n"a film, funny",sad,no\ngreat,funny,yes\n',
                                    encoding="utf-8")
    (tmp_path / "a.tsv").write_text("premise\thypothesis\tlabel\na film, funny\tsad\tno\ngreat\tfunny\tyes\n",
                                    encoding="utf-8")
    (tmp_path / "a.jsonl").write_text('{"premise": "a film, funny", "hypothesis": "sad", "label": "no"}\n'
                                      '{"premise": "great", "hypothesis": "funny", "label": "yes"}\n', encoding="utf-8")
    read = [read_classification(tmp_path / name, wordpiece, text_field="premise", pair_field="hypothesis")
            for name in ("a.csv", "a.tsv", "a.jsonl")]
    assert read[0].examples == read[1].examples == read[2].examples
    example = read[0].examples[0]
    assert example["labels"] == 0 and example["token_type_ids"][-1] == 1
    assert example["input_ids"] == wordpiece.backend.encode("a film, funny", "sad").ids
    assert LabelSet.from_dict(read[0].labels.to_dict()) == read[0].labels == LabelSet(["no", "yes"])
    batch = collate(read[0].examples, wordpiece.pad_id)
    assert batch["labels"].tolist() == [0, 1] and batch["attention_mask"].sum() == sum(
        len(e["input_ids"]) for e in read[0].examples)


def test_missing_labels_and_fields_are_clear_errors(wordpiece, tmp_path):
    (tmp_path / "a.txt").write_text("1 good film\nbad\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"a\.txt:2: expected `label text`"):
        read_classification(tmp_path / "a.txt", wordpiece)
    (tmp_path / "b.csv").write_text("text,label\ngood,1\nbad,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"b\.csv:3: the 'label' field is missing"):
        read_classification(tmp_path / "b.csv", wordpiece)
    (tmp_path / "c.csv").write_text("sentence,label\ngood,1\n", encoding="utf-8")
    with pytest.raises(DataError, match="no 'text' column"):
        read_classification(tmp_path / "c.csv", wordpiece)
    (tmp_path / "d.jsonl").write_text('{"text": "good", "label": 1}\n{"text": "bad"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.jsonl:2: the 'label' field"):
        read_classification(tmp_path / "d.jsonl", wordpiece)
    (tmp_path / "e.conll").write_text("Paris\tB-loc\nrocks\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"e\.conll:2: no tag column"):
        read_conll(tmp_path / "e.conll", wordpiece)


@needs_data
def test_parallel_text_from_two_files_and_jsonl(wordpiece, tmp_path):
    en, de = DATA / "translation" / "multi30k.val.en.txt", DATA / "translation" / "multi30k.val.de.txt"
    data = read_parallel(en, de, wordpiece)
    assert len(data.examples) == 1014 and data.labels is None
    first_en, first_de = en.read_text(encoding="utf-8").splitlines()[0], de.read_text(encoding="utf-8").splitlines()[0]
    assert data.examples[0] == {"input_ids": wordpiece.encode(first_en), "labels": wordpiece.encode(first_de)}
    (tmp_path / "p.jsonl").write_text('{"en": "a film", "de": "ein Film"}\n', encoding="utf-8")
    pairs = read_parallel(tmp_path / "p.jsonl", None, wordpiece, source_field="en", target_field="de")
    assert pairs.examples[0]["labels"] == wordpiece.encode("ein Film")
    batch = next(labelled_batches(data.examples, 8, wordpiece.pad_id, shuffle=False))
    assert batch["labels"].shape[0] == 8 and (batch["labels"] == -100).any()
    (tmp_path / "short.txt").write_text("one line\n", encoding="utf-8")
    with pytest.raises(DataError, match="aligned line by line"):
        read_parallel(en, tmp_path / "short.txt", wordpiece)
