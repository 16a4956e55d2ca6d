"""Labelled data for fine-tuning: classification, CoNLL token classification, parallel text.

Each reader returns a `TaskData`: `.examples` (dicts with "input_ids", "labels", maybe "token_type_ids",
ready for `lmforge.data.collate`) and `.labels` (the `LabelSet`, None for parallel text). Pass the training
set's `labels` when reading evaluation data: an unseen label is then a DataError naming file and line.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer as Backend

from ..errors import DataError
from ..tokenizer import Tokenizer
from .collate import IGNORE_INDEX
from ..readers import parse_json_line, read_lines


class LabelSet:
    """An ordered list of label names; a label's id is its position. Inferred from training data
    (sorted, with "O" first for tags) and stored with the model (`to_dict` / `from_dict`)."""

    def __init__(self, names: Iterable[str]):
        self.names = list(names)
        self.ids = {name: i for i, name in enumerate(self.names)}

    @classmethod
    def infer(cls, labels: Iterable[str]) -> "LabelSet":
        """The sorted set of `labels` ("O", the outside tag, first)."""
        unique = set(labels)
        return cls((["O"] if "O" in unique else []) + sorted(unique - {"O"}))

    def id(self, name: str, source: str = "", line: int = 0) -> int:
        """The id of `name`; an unknown label raises DataError naming where it was found."""
        if name not in self.ids:
            where = f"{source}:{line}: " if source else ""
            raise DataError(f"{where}label {name!r} was not in the training data (known: {', '.join(self.names)}); "
                            "fix the file or train with data that has this label")
        return self.ids[name]

    def to_dict(self) -> dict:
        return {"labels": self.names}

    @classmethod
    def from_dict(cls, data: dict) -> "LabelSet":
        return cls(data["labels"])

    def __len__(self) -> int:
        return len(self.names)

    def __eq__(self, other) -> bool:
        return isinstance(other, LabelSet) and other.names == self.names

    def __repr__(self) -> str:
        return f"LabelSet({self.names})"


@dataclass
class TaskData:
    """Encoded examples plus the label set they use (None for parallel text)."""

    examples: list[dict]
    labels: LabelSet | None


@dataclass
class _Record:
    text: str
    pair: str | None
    label: str
    line: int


# ---- classification -------------------------------------------------------------------------------------------
def read_classification(path: str | Path, tokenizer: Tokenizer, labels: LabelSet | None = None, *,
                        text_field: str = "text", pair_field: str | None = None, label_field: str = "label",
                        max_length: int = 512, errors: str = "strict") -> TaskData:
    """Read sentence (or sentence-pair) classification data.

    Formats, by suffix: .csv / .tsv (a header row naming `text_field`, `label_field`, and `pair_field` for
    pairs), .jsonl (the same fields), anything else `label<space>text` lines (SST-2 style). Texts are
    encoded with the tokenizer's special tokens ([CLS] a [SEP] b [SEP] for pairs), truncated to `max_length`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"labelled file {path} does not exist; check the path")
    suffix = path.name.removesuffix(".gz").rsplit(".", 1)[-1].lower()
    if suffix in ("csv", "tsv"):
        records = _table_records(path, "\t" if suffix == "tsv" else ",", text_field, pair_field, label_field)
    elif suffix in ("jsonl", "ndjson"):
        records = _jsonl_records(path, text_field, pair_field, label_field, errors)
    else:
        records = _label_text_records(path, errors)
    records = list(records)
    if not records:
        raise DataError(f"{path} holds no examples; check the file and its format")
    if _looks_like_conll(records):
        raise DataError(f"{path} is not a classification file: its lines are word + tag pairs (CoNLL, for "
                        "--task tag); a classification file has `label text` lines, .tsv/.csv or .jsonl")
    if labels is None:
        labels = LabelSet.infer(r.label for r in records)
        if len(labels) < 2:
            raise DataError(f"{path} holds one label ({labels.names[0]!r}) in all {len(records)} examples; a "
                            "classifier learns from examples of at least two labels: fix the file, or name the "
                            "label column with --label-field")
    ids = [labels.id(r.label, str(path), r.line) for r in records]
    inputs = [(r.text, r.pair) if pair_field else r.text for r in records]
    encodings = _truncating(tokenizer, max_length).encode_batch(inputs)
    examples = [{"input_ids": e.ids, "token_type_ids": e.type_ids, "labels": label}
                for e, label in zip(encodings, ids)]
    return TaskData(examples, labels)


def _label_text_records(path: Path, errors: str) -> Iterator[_Record]:
    for number, line, _ in read_lines(path, errors):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) < 2:
            raise DataError(f"{path}:{number}: expected `label text`, found only {parts[0]!r}; "
                            "each line needs a label, a space, then the text")
        yield _Record(parts[1], None, parts[0], number)


def _jsonl_records(path: Path, text_field: str, pair_field: str | None, label_field: str,
                   errors: str) -> Iterator[_Record]:
    for number, line, _ in read_lines(path, errors):
        if line.strip():
            record = parse_json_line(line, path, number)
            yield _record(record, text_field, pair_field, label_field, path, number)


def _table_records(path: Path, delimiter: str, text_field: str, pair_field: str | None,
                   label_field: str) -> Iterator[_Record]:
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            wanted = [f for f in (text_field, pair_field, label_field) if f]
            missing = [f for f in wanted if f not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}:1: the header has no {', '.join(map(repr, missing))} column "
                                f"(columns: {', '.join(reader.fieldnames or [])}); name the columns with "
                                "--text-field / --label-field")
            for row in reader:
                yield _record(row, text_field, pair_field, label_field, path, reader.line_num)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not valid UTF-8 near byte {error.start}; save the file as UTF-8") from None
    except csv.Error as error:
        raise DataError(f"{path}: malformed {'TSV' if delimiter == chr(9) else 'CSV'} ({error})") from None


def _record(row: dict, text_field: str, pair_field: str | None, label_field: str, path: Path,
            number: int) -> _Record:
    """One example from a dict-like row; a missing or empty field is a DataError naming file and line."""
    values = {}
    for field in (text_field, pair_field, label_field):
        if field is None:
            continue
        value = row.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{path}:{number}: the {field!r} field is missing or empty; every example needs it")
        values[field] = value if isinstance(value, str) else json.dumps(value)
    return _Record(values[text_field], values.get(pair_field), values[label_field], number)


# ---- token classification -------------------------------------------------------------------------------------
def read_conll(path: str | Path, tokenizer: Tokenizer, labels: LabelSet | None = None, *,
               max_length: int = 512, errors: str = "strict") -> TaskData:
    """Read CoNLL token classification data: `token<TAB or space>...tag` per line (first and last columns),
    a blank line between sentences, `-DOCSTART-` lines skipped. Each word's tag goes to its first
    sub-token; the other sub-tokens and the special tokens get -100. Examples also carry "word_ids"
    (the word index of every labelled position) to map predictions back to words."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CoNLL file {path} does not exist; check the path")
    sentences = list(_conll_sentences(path, errors))
    if not sentences:
        raise DataError(f"{path} holds no sentences; expected `token<TAB>tag` lines")
    labels = labels if labels is not None else LabelSet.infer(tag for s in sentences for _, tag, _ in s)
    tag_ids = [[labels.id(tag, str(path), line) for _, tag, line in sentence] for sentence in sentences]
    encodings = _truncating(tokenizer, max_length).encode_batch([[w for w, _, _ in s] for s in sentences],
                                                                is_pretokenized=True)
    examples = []
    for encoding, tags in zip(encodings, tag_ids):
        aligned, words, previous = [], [], None
        for word in encoding.word_ids:
            first = word is not None and word != previous
            aligned.append(tags[word] if first else IGNORE_INDEX)
            if first:
                words.append(word)
            previous = word
        examples.append({"input_ids": encoding.ids, "labels": aligned, "word_ids": words})
    return TaskData(examples, labels)


def _conll_sentences(path: Path, errors: str) -> Iterator[list[tuple[str, str, int]]]:
    """Sentences of (word, tag, line number); every line has as many columns as the first (a file whose lines
    vary in width is prose, e.g. `label text` lines for --task classify, not CoNLL)."""
    sentence, width = [], None
    for number, line, _ in read_lines(path, errors):
        if not line.strip():
            if sentence:
                yield sentence
            sentence = []
            continue
        columns = line.split("\t") if "\t" in line else line.split()
        if columns[0] == "-DOCSTART-":
            continue
        if len(columns) < 2 or not columns[-1].strip():
            raise DataError(f"{path}:{number}: no tag column in {line!r}; expected `token<TAB>tag`")
        width = width or len(columns)
        if len(columns) != width:
            raise DataError(f"{path}:{number}: {len(columns)} columns where the first line has {width}; CoNLL data "
                            "has one `token<TAB>tag` per line (a `label text` file is for --task classify)")
        sentence.append((columns[0], columns[-1].strip(), number))
    if sentence:
        yield sentence


# ---- parallel text --------------------------------------------------------------------------------------------
def read_parallel(source: str | Path, target: str | Path | None, tokenizer: Tokenizer, *,
                  target_tokenizer: Tokenizer | None = None, source_field: str = "source",
                  target_field: str = "target", max_length: int = 512, errors: str = "strict") -> TaskData:
    """Read parallel text for sequence-to-sequence fine-tuning: two line-aligned files (`source`, `target`),
    or one JSONL file (`target=None`) with `source_field` / `target_field`. Examples hold the encoded
    source as "input_ids" and the encoded target (with the tokenizer's special tokens) as "labels"."""
    source = Path(source)
    for file in (source, target):
        if file is not None and not Path(file).is_file():
            raise DataError(f"parallel file {file} does not exist; check the path")
    pairs = _jsonl_pairs(source, source_field, target_field, errors) if target is None \
        else _aligned_pairs(source, Path(target), errors)
    if not pairs:
        raise DataError(f"{source} holds no sentence pairs")
    sources = _truncating(tokenizer, max_length).encode_batch([s for s, _ in pairs])
    targets = _truncating(target_tokenizer or tokenizer, max_length).encode_batch([t for _, t in pairs])
    return TaskData([{"input_ids": s.ids, "labels": t.ids} for s, t in zip(sources, targets)], None)


def _aligned_pairs(source: Path, target: Path, errors: str) -> list[tuple[str, str]]:
    sources = [line for _, line, _ in read_lines(source, errors)]
    targets = [line for _, line, _ in read_lines(target, errors)]
    if len(sources) != len(targets):
        raise DataError(f"{source} has {len(sources)} lines but {target} has {len(targets)}; "
                        "parallel files must be aligned line by line")
    return list(zip(sources, targets))


def _jsonl_pairs(path: Path, source_field: str, target_field: str, errors: str) -> list[tuple[str, str]]:
    pairs = []
    for number, line, _ in read_lines(path, errors):
        if line.strip():
            record = parse_json_line(line, path, number)
            for field in (source_field, target_field):
                if not isinstance(record.get(field), str):
                    raise DataError(f"{path}:{number}: no text {field!r} field; every line needs "
                                    f"{source_field!r} and {target_field!r}")
            pairs.append((record[source_field], record[target_field]))
    return pairs


_TAG = re.compile(r"(O|[BIESL]-\S+|[BIESLU]-?[A-Z]+)")


def _looks_like_conll(records: list[_Record]) -> bool:
    """Whether `label text` records are really CoNLL `word tag` lines: almost every 'text' is one BIO tag."""
    tags = sum(1 for r in records if _TAG.fullmatch(r.text.strip()))
    return tags >= 0.9 * len(records)


def _truncating(tokenizer: Tokenizer, max_length: int) -> Backend:
    """A copy of the tokenizer's backend that truncates to `max_length` ids (special tokens included)."""
    backend = Backend.from_str(tokenizer.backend.to_str())
    needed = backend.num_special_tokens_to_add(True) + 2  # a pair's special tokens and one token of each text
    if not isinstance(max_length, int) or max_length < needed:
        raise DataError(f"max length {max_length!r} leaves no room for text after the tokenizer's special tokens; "
                        f"use --max-length {needed} or more")
    backend.enable_truncation(max_length)
    backend.no_padding()
    return backend
