"""Corpus preparation: raw text -> memory-mapped token shards + a JSON index, streaming.

A prepared folder holds, per split (train, valid):
  {split}.bin       the token ids of every document, each followed by the separator token, back to back
                    (uint16 when the vocabulary fits, else uint32; raw little-endian, read with numpy.memmap)
  {split}.docs.bin  int64 offsets: document i is tokens[docs[i]:docs[i+1]] (its separator included)
  index.json        dtype, token and document counts, separator id, the tokenizer fingerprint, the options.
The validation split takes every document i with floor((i+1)f) > floor(if) for valid fraction f (evenly
spread, exactly floor(n f) documents); a corpus with fewer than 1/f documents instead gives the last
f of its train tokens to validation. Nothing is written unless the whole preparation succeeds.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from ..checkpoint.atomic import atomic_folder
from ..checkpoint.output import claim_folder, mark_folder
from ..errors import DataError
from ..tokenizer import Tokenizer
from ..readers import Document, expand_inputs, iter_documents

FORMAT = "lmforge-token-shards"
FORMAT_VERSION = 1
SPLITS = ("train", "valid")
BATCH_CHARS = 1 << 20  # encode about 1 MB of text per encode_batch call


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in 16 bits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def separator_id(tokenizer: Tokenizer) -> int | None:
    """The token written after every document: eos (GPT-2, T5), else sep (BERT), else none."""
    return next((i for i in (tokenizer.eos_id, tokenizer.sep_id) if i is not None), None)


def prepare_corpus(inputs: Iterable[str | Path], tokenizer: Tokenizer, out: str | Path, *,
                   blank_line_docs: bool = False, text_field: str = "text", valid_fraction: float = 0.01,
                   errors: str = "strict", progress: bool = True, overwrite: bool = False) -> dict:
    """Tokenize `inputs` (files/folders of .txt, .jsonl, .gz) into token shards at `out`; return the index.

    Streams: documents are read, encoded about 1 MB at a time with the tokenizer's multi-threaded
    `encode_batch`, and appended to the shard files, so memory does not grow with the corpus. `out` must be
    new or empty, or (with `overwrite`) token shards lmforge wrote before."""
    claim_folder(out, "shards", overwrite)
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"valid fraction must be in [0, 1), got {valid_fraction}")
    files = expand_inputs(inputs)
    options = {"blank_line_docs": blank_line_docs, "text_field": text_field, "errors": errors,
               "valid_fraction": valid_fraction}
    dtype = token_dtype(tokenizer.vocab_size)
    separator = separator_id(tokenizer)
    started = time.perf_counter()
    total_bytes = None if any(f.suffix == ".gz" for f in files) else sum(f.stat().st_size for f in files)
    with atomic_folder(out) as tmp, tqdm(total=total_bytes, unit="B", unit_scale=True, desc="prepare",
                                         disable=not progress) as bar:
        writers = {split: _ShardWriter(tmp, split, dtype) for split in SPLITS}
        source_bytes = 0
        try:
            for batch in _batches(iter_documents(files, blank_line_docs=blank_line_docs, text_field=text_field,
                                                 errors=errors)):
                encodings = tokenizer.backend.encode_batch([d.text for d in batch], add_special_tokens=False)
                first = writers["train"].documents + writers["valid"].documents
                is_valid = [_is_valid(first + i, valid_fraction) for i in range(len(batch))]
                for split, wanted in (("train", False), ("valid", True)):
                    writers[split].add([e.ids for e, v in zip(encodings, is_valid) if v == wanted], separator)
                batch_bytes = sum(d.nbytes for d in batch)
                source_bytes += batch_bytes
                bar.update(batch_bytes)
        finally:
            for writer in writers.values():
                writer.close()
        documents = sum(w.documents for w in writers.values())
        if documents == 0:
            raise DataError(f"the inputs ({', '.join(map(str, files[:3]))}{', ...' if len(files) > 3 else ''}) "
                            "hold no text; check the files are not empty"
                            + ("" if text_field == "text" else f" and have a {text_field!r} field"))
        if writers["valid"].documents == 0 and valid_fraction > 0:
            _move_tail_to_valid(tmp, dtype, valid_fraction, writers)
        index = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "dtype": dtype.name,
            "vocab_size": tokenizer.vocab_size, "tokenizer_hash": tokenizer.fingerprint,
            "separator_id": separator, "documents": documents,
            "tokens": sum(w.tokens for w in writers.values()),
            **{split: {"documents": w.documents, "tokens": w.tokens} for split, w in writers.items()},
            "source_bytes": source_bytes, "seconds": round(time.perf_counter() - started, 3),
            "inputs": [str(f) for f in files], "options": options,
        }
        (tmp / "index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        tokenizer.save(tmp / "tokenizer")
        mark_folder(tmp, "shards")
    return index


def _is_valid(document_number: int, fraction: float) -> bool:
    """Whether the document with this 0-based number goes to validation (evenly spread, deterministic)."""
    return math.floor((document_number + 1) * fraction) > math.floor(document_number * fraction)


def _batches(documents: Iterator[Document]) -> Iterator[list[Document]]:
    """Group documents into lists of about BATCH_CHARS characters."""
    batch, size = [], 0
    for document in documents:
        batch.append(document)
        size += len(document.text)
        if size >= BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class _ShardWriter:
    """Appends documents to {split}.bin and their end offsets to {split}.docs.bin, a batch at a time."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype):
        self.dtype, self.documents, self.tokens = dtype, 0, 0
        self.token_file = open(folder / f"{split}.bin", "wb")
        self.docs_file = open(folder / f"{split}.docs.bin", "wb")
        np.zeros(1, dtype=np.int64).tofile(self.docs_file)  # offsets start at 0

    def add(self, documents: list[list[int]], separator: int | None) -> None:
        """Append documents (lists of ids), each followed by `separator` when there is one."""
        if not documents:
            return
        extra = 0 if separator is None else 1
        lengths = np.array([len(d) + extra for d in documents], dtype=np.int64)
        tokens = np.fromiter((i for d in documents for i in (d + [separator] if extra else d)), dtype=self.dtype,
                             count=int(lengths.sum()))
        tokens.tofile(self.token_file)
        (self.tokens + np.cumsum(lengths)).tofile(self.docs_file)
        self.tokens += int(lengths.sum())
        self.documents += len(documents)

    def close(self) -> None:
        self.token_file.close()
        self.docs_file.close()


def _move_tail_to_valid(folder: Path, dtype: np.dtype, fraction: float, writers: dict) -> None:
    """Too few documents for a document-level split: the last `fraction` of train tokens become validation
    (the document they cut keeps its head in train and its tail in valid)."""
    train = writers["train"]
    moved = max(1, int(train.tokens * fraction))
    if moved >= train.tokens:
        return
    keep = train.tokens - moved
    tokens = np.memmap(folder / "train.bin", dtype=dtype, mode="r")
    np.asarray(tokens[keep:]).tofile(folder / "valid.bin")
    del tokens
    os.truncate(folder / "train.bin", keep * dtype.itemsize)
    offsets = np.fromfile(folder / "train.docs.bin", dtype=np.int64)
    cut = np.append(offsets[offsets < keep], keep)
    cut.tofile(folder / "train.docs.bin")
    np.asarray([0, moved], dtype=np.int64).tofile(folder / "valid.docs.bin")
    writers["valid"].tokens, writers["valid"].documents = moved, 1
    train.tokens, train.documents = keep, len(cut) - 1


class TokenShards:
    """A prepared corpus folder, opened read-only and memory-mapped (nothing is loaded into RAM).

    `.train` / `.valid`: 1-D numpy arrays of token ids; `.train_docs` / `.valid_docs`: int64 document
    offsets (document i is `train[train_docs[i]:train_docs[i + 1]]`); `.index`: the index.json dict;
    `.tokenizer_hash`, `.separator_id`, `.vocab_size`; `.tokenizer` loads the tokenizer saved with it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        index_path = self.path / "index.json"
        if not index_path.is_file():
            raise DataError(f"{self.path} is not a prepared corpus (no index.json); create it with `lmforge prepare`")
        self.index = json.loads(index_path.read_text(encoding="utf-8"))
        if self.index.get("format") != FORMAT:
            raise DataError(f"{index_path} is not an lmforge token-shard index")
        self.dtype = np.dtype(self.index["dtype"])
        for split in SPLITS:
            setattr(self, split, self._map(f"{split}.bin", self.dtype, self.index[split]["tokens"]))
            setattr(self, f"{split}_docs", self._map(f"{split}.docs.bin", np.int64, self.index[split]["documents"] + 1))

    tokenizer_hash = property(lambda self: self.index["tokenizer_hash"])
    separator_id = property(lambda self: self.index["separator_id"])
    vocab_size = property(lambda self: self.index["vocab_size"])

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer the corpus was prepared with."""
        return Tokenizer.load(self.path / "tokenizer")

    def split(self, name: str) -> np.ndarray:
        """The token array of split `name` ("train" or "valid")."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def documents(self, split: str = "train") -> Iterator[np.ndarray]:
        """The documents of a split, one token array (separator included) at a time."""
        tokens, offsets = self.split(split), getattr(self, f"{split}_docs")
        for start, end in zip(offsets[:-1], offsets[1:]):
            yield tokens[start:end]

    def check_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Raise DataError unless `tokenizer` is the one the corpus was prepared with."""
        if tokenizer.fingerprint != self.tokenizer_hash:
            raise DataError(f"{self.path} was prepared with another tokenizer (hash {self.tokenizer_hash}, "
                            f"this one {tokenizer.fingerprint}); prepare the corpus again with the model's tokenizer")

    def _map(self, name: str, dtype, length: int) -> np.ndarray:
        file = self.path / name
        expected = length * np.dtype(dtype).itemsize
        if not file.is_file() or file.stat().st_size != expected:
            raise DataError(f"{file} is missing or has the wrong size (expected {expected} bytes); "
                            "prepare the corpus again")
        return np.empty(0, dtype=dtype) if length == 0 else np.memmap(file, dtype=dtype, mode="r", shape=(length,))

    def __repr__(self) -> str:
        return (f"TokenShards({str(self.path)!r}: {self.index['documents']} documents, "
                f"{len(self.train):,} train + {len(self.valid):,} valid tokens)")
