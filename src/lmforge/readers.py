"""Streaming raw-text readers: files, folders, .gz, .jsonl -> documents, one at a time, never the whole corpus.

Shared by tokenizer training and corpus preparation. Every error names the file and line and says how to fix it.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from .errors import DataError

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
ERROR_MODES = ("strict", "replace")


@dataclass(frozen=True)
class Document:
    """One document of raw text, with where it came from and how many source bytes it used."""

    text: str
    source: str
    line: int  # 1-based line where the document starts
    nbytes: int  # raw (decompressed) bytes read for it, for progress bars


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named in `inputs`, folders expanded recursively (sorted, hidden files skipped).

    Raises DataError for a missing path, and for an input list that names no file at all."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_corpus_file(p)
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise DataError(f"folder {path} holds no .txt, .jsonl or .gz files; point to the files themselves")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"input {path} does not exist; check the path")
    if not files:
        raise DataError("no input files given; name at least one .txt, .jsonl, .gz file or folder")
    return files


def iter_documents(inputs: Iterable[str | Path], *, blank_line_docs: bool = False, text_field: str = "text",
                   errors: str = "strict") -> Iterator[Document]:
    """Yield the documents of `inputs`, streaming.

    A `.txt` file is one document, or one per blank-line-separated block with `blank_line_docs`; a `.jsonl`
    file is one document per line (its `text_field`); `.gz` holds either; folders are read recursively.
    Documents that are only whitespace are skipped. `errors="replace"` turns undecodable bytes into U+FFFD
    instead of raising a DataError that names file and line."""
    if errors not in ERROR_MODES:
        raise DataError(f"errors must be one of {', '.join(ERROR_MODES)}, got {errors!r}")
    for path in expand_inputs(inputs):
        if _is_jsonl(path):
            yield from _jsonl_documents(path, text_field, errors)
        else:
            yield from _text_documents(path, blank_line_docs, errors)


def iter_texts(inputs, **options) -> Iterator[str]:
    """Only the text of `iter_documents(inputs, **options)`."""
    return (document.text for document in iter_documents(inputs, **options))


def read_lines(path: Path, errors: str = "strict") -> Iterator[tuple[int, str, int]]:
    """Yield (line number, decoded line without its newline, raw byte count) from a text or .gz file."""
    try:
        with _open_binary(path) as handle:
            for number, raw in enumerate(handle, start=1):
                yield number, _decode(raw, path, number, errors).rstrip("\r\n"), len(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"cannot read {path}: {error}") from None


# ---- formats ----------------------------------------------------------------------------------------------
def _text_documents(path: Path, blank_line_docs: bool, errors: str) -> Iterator[Document]:
    lines: list[str] = []
    start, nbytes = 1, 0
    for number, line, size in read_lines(path, errors):
        nbytes += size
        if blank_line_docs and not line.strip():
            if lines:
                yield Document("\n".join(lines), str(path), start, nbytes)
            lines, nbytes, start = [], 0, number + 1
            continue
        if not lines:
            start = number
        lines.append(line)
    text = "\n".join(lines)
    if text.strip():
        yield Document(text, str(path), start, nbytes)


def _jsonl_documents(path: Path, text_field: str, errors: str) -> Iterator[Document]:
    for number, line, size in read_lines(path, errors):
        if not line.strip():
            continue
        record = parse_json_line(line, path, number)
        text = record.get(text_field)
        if text is None:
            raise DataError(f"{path}:{number}: no {text_field!r} field (fields: {', '.join(record) or 'none'}); "
                            "choose the field with --text-field")
        if not isinstance(text, str):
            raise DataError(f"{path}:{number}: field {text_field!r} is {type(text).__name__}, not text")
        if text.strip():
            yield Document(text, str(path), number, size)


def parse_json_line(line: str, path: Path, number: int) -> dict:
    """One JSONL record as a dict, or a DataError naming file and line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{number}: not valid JSON ({error.msg}); each line must be one JSON object") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
    return record


# ---- files ------------------------------------------------------------------------------------------------
def _decode(raw: bytes, path: Path, number: int, errors: str) -> str:
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}:{number}: not valid UTF-8 (byte {raw[error.start]:#04x} at column {error.start + 1}); "
                        "fix the file or pass --errors replace") from None


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _is_jsonl(path: Path) -> bool:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.endswith(JSONL_SUFFIXES)


def _is_corpus_file(path: Path) -> bool:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES)
