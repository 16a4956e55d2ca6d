"""Tokenizers: a thin wrapper around the `tokenizers` library that knows a model family's special tokens.

`train_tokenizer(kind, vocab_size, inputs)` trains one of the three classic schemes:
  bpe        byte-level BPE as GPT-2: `<|endoftext|>` (bos/eos) and `<|pad|>`; lossless round trip
  wordpiece  WordPiece as BERT: [PAD] [UNK] [CLS] [SEP] [MASK]; adds [CLS] ... [SEP] around a text
  unigram    Unigram as T5: <pad> </s> <unk>, appends </s>, plus sentinels <extra_id_0> ... <extra_id_99>
`Tokenizer.load(folder)` reads tokenizer.json, or vocab.json + merges.txt (GPT-2), or vocab.txt (BERT).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from .config import padding_id
from .errors import DataError
from .files import naming, read_mapping
from .readers import iter_texts, split_text
from .vocab_training import canonical_unigram, count_words, wordpiece_vocab

SPECIAL_ROLES = ("pad", "unk", "bos", "eos", "mask", "cls", "sep")
SPECIALS_FILE = "lmforge_tokenizer.json"


class Tokenizer:
    """Text <-> token ids. `specials` maps a role (pad, unk, bos, eos, mask, cls, sep) to its token string."""

    def __init__(self, backend: Backend, specials: dict[str, str] | None = None, chat_template: str | None = None):
        self.backend = backend
        self.chat_template = chat_template  # Jinja text rendering a conversation as a prompt (chat models)
        self.specials = {role: tok for role, tok in (specials or {}).items() if tok is not None}
        for role, token in self.specials.items():
            if backend.token_to_id(token) is None:
                raise DataError(f"the {role} token {token!r} is not in the tokenizer's vocabulary")

    # ---- special tokens ---------------------------------------------------------------------------
    def special_id(self, role: str) -> int | None:
        token = self.specials.get(role)
        return None if token is None else self.backend.token_to_id(token)

    pad_id = property(lambda self: self.special_id("pad"))
    unk_id = property(lambda self: self.special_id("unk"))
    bos_id = property(lambda self: self.special_id("bos"))
    eos_id = property(lambda self: self.special_id("eos"))
    mask_id = property(lambda self: self.special_id("mask"))
    cls_id = property(lambda self: self.special_id("cls"))
    sep_id = property(lambda self: self.special_id("sep"))

    @property
    def padding_id(self) -> int:
        """The id that fills padded slots of every lmforge batch, by `config.padding_id`'s policy: the pad
        token, else end-of-sequence (GPT-2 has no pad token), else the separator; none of them: a ConfigError."""
        return padding_id(self.pad_id, self.eos_id, self.sep_id, owner="the tokenizer",
                          fix="train it with one (`lmforge tokenizer train --special pad=<pad>`) or add a pad token "
                              "to its special tokens")

    @property
    def special_ids(self) -> set[int]:
        """Ids of every special/added token (never masked, never counted as text)."""
        ids = {self.backend.token_to_id(t) for t in self.specials.values()}
        ids |= {i for i, tok in self.backend.get_added_tokens_decoder().items() if tok.special}
        return {i for i in ids if i is not None}

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def sentinel_ids(self) -> list[int]:
        """Ids of the T5 sentinels `<extra_id_0>`, `<extra_id_1>`, ... in that order (empty if none)."""
        ids = []
        while (index := self.backend.token_to_id(f"<extra_id_{len(ids)}>")) is not None:
            ids.append(index)
        return ids

    @property
    def fingerprint(self) -> str:
        """A short hash of the vocabulary, pipeline and special roles: token shards record it so that a
        model is never trained on ids from another tokenizer."""
        # Unigram scores do not survive a save/load bit for bit (the last digit of a float may change),
        # so floats enter the hash rounded to 8 significant digits.
        pipeline = json.loads(self.backend.to_str(), parse_float=lambda text: f"{float(text):.8g}")
        canonical = json.dumps({"tokenizer": pipeline, "specials": self.specials},
                               sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    def word_starts(self) -> np.ndarray:
        """A bool array over the vocabulary: True where a token begins a word (for whole-word masking).

        WordPiece continuations start with `##`; byte-level BPE and Metaspace words start with `Ġ` / `▁`.
        Special tokens always count as word starts. Other schemes treat every token as a word."""
        vocab = self.backend.get_vocab(with_added_tokens=True)
        starts = np.ones(self.vocab_size, dtype=bool)
        model = self.backend.model
        if isinstance(model, models.WordPiece):
            prefix = model.continuing_subword_prefix
            for token, index in vocab.items():
                starts[index] = not token.startswith(prefix)
        else:
            marker = {"ByteLevel": "\u0120", "Metaspace": "\u2581"}.get(type(self.backend.pre_tokenizer).__name__)
            if marker is not None:
                for token, index in vocab.items():
                    starts[index] = token.startswith(marker)
        starts[list(self.special_ids)] = True
        return starts

    # ---- encoding ------------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, index: int) -> str | None:
        return self.backend.id_to_token(index)

    # ---- files ---------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write tokenizer.json (the `tokenizers` format) and the special-token roles."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with naming(folder / "tokenizer.json"):
            self.backend.save(str(folder / "tokenizer.json"))
        settings = {"specials": self.specials, **({"chat_template": self.chat_template} if self.chat_template else {})}
        (folder / SPECIALS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> "Tokenizer":
        """Read a folder holding tokenizer.json (and, when written by lmforge, its special-token roles),
        or GPT-2's vocab.json + merges.txt, or BERT's vocab.txt (uncased unless lmforge roles say otherwise)."""
        folder = Path(folder)
        path = folder / "tokenizer.json" if folder.is_dir() else folder
        if folder.is_dir() and not path.is_file():
            legacy = _load_legacy_files(folder)
            if legacy is not None:
                specials = guess_specials(legacy)
                legacy.add_special_tokens(list(dict.fromkeys(specials.values())))  # never split them
                return cls(legacy, specials)
        if not path.is_file():
            raise DataError(f"no tokenizer.json in {folder}; train one with `lmforge tokenizer train` "
                            "or point to a folder that has one")
        try:
            backend = Backend.from_file(str(path))
        except Exception as error:  # the tokenizers library raises a plain Exception for bad files
            raise DataError(f"{path} is not a valid tokenizer.json ({error})") from None
        specials_path = path.parent / SPECIALS_FILE
        settings = _read_settings(specials_path, backend) if specials_path.is_file() \
            else {"specials": guess_specials(backend)}
        return cls(backend, settings["specials"], settings.get("chat_template"))


def _read_settings(path: Path, backend: Backend) -> dict:
    """The settings saved next to tokenizer.json: the role -> token mapping, checked against the
    vocabulary, and the chat template when there is one."""
    settings = read_mapping(path, "tokenizer specials file", DataError)
    specials = settings.get("specials")
    template = settings.get("chat_template")
    if template is not None and not isinstance(template, str):
        raise DataError(f"{path}: 'chat_template' must be a string; save the tokenizer again")
    if not isinstance(specials, dict) or not all(isinstance(t, str) for t in specials.values()):
        raise DataError(f"{path} needs a 'specials' mapping of role -> token; save the tokenizer again")
    unknown = [t for t in specials.values() if backend.token_to_id(t) is None]
    if unknown:
        raise DataError(f"{path} names special token(s) {', '.join(map(repr, unknown))} that are not in the "
                        "vocabulary; save the tokenizer again")
    return settings


def guess_specials(backend: Backend) -> dict[str, str]:
    """Special-token roles from the conventional token strings of BERT, GPT-2, RoBERTa/BART and T5."""
    vocab = backend.get_vocab(with_added_tokens=True)
    candidates = {
        "pad": ["[PAD]", "<pad>", "<|pad|>"], "unk": ["[UNK]", "<unk>"], "cls": ["[CLS]"], "sep": ["[SEP]"],
        "mask": ["[MASK]", "<mask>"], "bos": ["<s>", "<|endoftext|>"], "eos": ["</s>", "<|endoftext|>"],
    }
    return {role: next(t for t in options if t in vocab)
            for role, options in candidates.items() if any(t in vocab for t in options)}


# ---- training ----------------------------------------------------------------------------------------------
KINDS = ("bpe", "wordpiece", "unigram")
DEFAULT_SPECIALS = {
    "bpe": {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "pad": "<|pad|>"},
    "wordpiece": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "unigram": {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"},
}
T5_SENTINELS = 100
BYTE_ALPHABET = 256


def train_tokenizer(kind: str, vocab_size: int, inputs: Iterable[str | Path] | Iterable[str], *,
                    specials: dict[str, str] | None = None, min_frequency: int = 2, lowercase: bool = False,
                    sentinels: int | None = None, text_options: dict | None = None,
                    show_progress: bool = False) -> Tokenizer:
    """Train a tokenizer of `kind` ("bpe" | "wordpiece" | "unigram") with `vocab_size` tokens in total.

    `inputs` is a path or a list of paths to files/folders (.txt, .jsonl, .gz; read as by
    `lmforge.readers.iter_documents` with `text_options`, e.g. {"text_field": "body", "errors": "replace"}),
    or any other iterable (a generator, say) of texts.
    `specials` adds or overrides special-token roles (e.g. {"mask": "<mask>"} gives a BPE tokenizer a mask
    for BART infilling). Unigram gets `sentinels` T5 sentinels (default 100), counted in `vocab_size`;
    `<extra_id_0>` has the highest id, as in T5. Raises DataError when there is no text or the vocabulary
    cannot hold the special tokens."""
    if kind not in KINDS:
        raise DataError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
    roles = {**DEFAULT_SPECIALS[kind], **(specials or {})}
    special_tokens = list(dict.fromkeys(roles.values()))  # unique, in role order
    sentinel_count = (T5_SENTINELS if sentinels is None else sentinels) if kind == "unigram" else (sentinels or 0)
    alphabet = BYTE_ALPHABET if kind == "bpe" else 1
    minimum = len(special_tokens) + sentinel_count + alphabet + 1
    if vocab_size < minimum:
        raise DataError(f"vocab size {vocab_size} is too small for {kind}: its {len(special_tokens)} special tokens, "
                        f"{sentinel_count} sentinels and {alphabet}-symbol alphabet need at least {minimum}")
    backend, trainer = _untrained(kind, vocab_size - sentinel_count, special_tokens, roles, min_frequency,
                                  lowercase, show_progress)
    texts = _CountingTexts(_texts(inputs, text_options or {}))
    if kind == "wordpiece":  # built here: the library's WordPiece trainer is not reproducible
        backend = _wordpiece_backend(backend, texts, vocab_size - sentinel_count, special_tokens, roles, min_frequency)
    else:
        try:
            backend.train_from_iterator(texts, trainer=trainer)
        except Exception as error:  # the tokenizers library raises plain Exceptions for untrainable input
            if texts.error is not None:
                raise texts.error from None
            if texts.count == 0:
                raise DataError("the inputs hold no text to train a tokenizer on; check the files are not empty") from None
            raise DataError(f"could not train a {kind} tokenizer with {vocab_size} tokens ({error}); "
                            "try a smaller --vocab-size or more text") from None
    if texts.count == 0:
        raise DataError("the inputs hold no text to train a tokenizer on; check the files are not empty")
    if kind == "unigram":
        backend = _canonical_unigram_backend(backend, len(special_tokens))
    _add_pipeline(kind, backend, roles, lowercase)
    # Added in reverse so that <extra_id_0> gets the highest id, as in T5.
    backend.add_special_tokens([f"<extra_id_{i}>" for i in reversed(range(sentinel_count))])
    return Tokenizer(backend, roles)


def _wordpiece_backend(untrained: Backend, texts, vocab_size: int, special_tokens: list[str], roles: dict,
                       min_frequency: int) -> Backend:
    """A WordPiece backend whose vocabulary `vocab_training.wordpiece_vocab` built from `texts`, with the
    untrained backend's normalizer and pre-tokenizer."""
    counts = count_words(texts, untrained.normalizer.normalize_str, untrained.pre_tokenizer.pre_tokenize_str)
    vocab = wordpiece_vocab(counts, vocab_size, special_tokens, min_frequency)
    backend = Backend(models.WordPiece(vocab, unk_token=roles.get("unk", "[UNK]"), continuing_subword_prefix="##"))
    backend.normalizer, backend.pre_tokenizer = untrained.normalizer, untrained.pre_tokenizer
    backend.add_special_tokens(special_tokens)
    return backend


def _canonical_unigram_backend(trained: Backend, specials: int) -> Backend:
    """The trained Unigram backend with its pieces in `vocab_training.canonical_unigram` order."""
    data = json.loads(trained.to_str())
    data["model"]["vocab"] = [list(p) for p in canonical_unigram([tuple(p) for p in data["model"]["vocab"]], specials)]
    return Backend.from_str(json.dumps(data, ensure_ascii=False))


class _CountingTexts:
    """An iterator of texts that remembers how many it gave and the DataError that stopped it, if any."""

    def __init__(self, texts: Iterable[str]):
        self.texts, self.count, self.error = iter(texts), 0, None

    def __iter__(self):
        return self

    def __next__(self) -> str:
        try:
            text = next(self.texts)
        except DataError as error:  # the tokenizers library would hide it in a generic Exception
            self.error = error
            raise
        self.count += 1
        return text


def _texts(inputs, options: dict) -> Iterable[str]:
    """A list/tuple names files and folders; any other iterable (a generator, say) yields the texts."""
    if isinstance(inputs, (list, tuple, str, Path)):
        texts = iter_texts([inputs] if isinstance(inputs, (str, Path)) else inputs, **options)
    else:
        texts = inputs
    return (piece for text in texts for piece in split_text(text))  # bounded memory for huge lines


def _untrained(kind, vocab_size, special_tokens, roles, min_frequency, lowercase, show_progress):
    """An empty backend and its trainer for `kind`."""
    if kind == "bpe":
        backend = Backend(models.BPE())
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=show_progress,
                                      special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif kind == "wordpiece":
        backend = Backend(models.WordPiece(unk_token=roles.get("unk", "[UNK]")))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            show_progress=show_progress, special_tokens=special_tokens)
    else:
        backend = Backend(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, show_progress=show_progress,
                                          special_tokens=special_tokens, unk_token=roles.get("unk", "<unk>"))
    _add_pipeline(kind, backend, roles, lowercase, post_processor=False)  # the trainer sees pre-tokenized words
    return backend, trainer


def _add_pipeline(kind: str, backend: Backend, roles: dict[str, str], lowercase: bool,
                  post_processor: bool = True) -> None:
    """Normalizer, pre-tokenizer, decoder and (optionally) post-processor of each family."""
    if kind == "bpe":
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        if post_processor:
            backend.post_processor = processors.ByteLevel(trim_offsets=False)
    elif kind == "wordpiece":
        backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase or None)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece()
        if post_processor:
            cls, sep = roles["cls"], roles["sep"]
            backend.post_processor = processors.TemplateProcessing(
                single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
                special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))])
    else:
        backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()] if lowercase
                                                  else [normalizers.NFKC()])
        backend.pre_tokenizer = pre_tokenizers.Metaspace()
        backend.decoder = decoders.Metaspace()
        if post_processor:
            eos = roles["eos"]
            backend.post_processor = processors.TemplateProcessing(
                single=f"$A {eos}", pair=f"$A {eos} $B:1 {eos}:1", special_tokens=[(eos, backend.token_to_id(eos))])


def _load_legacy_files(folder: Path) -> Backend | None:
    """GPT-2's vocab.json + merges.txt or BERT's vocab.txt as a backend with the family's pipeline."""
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        backend = Backend(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
        _add_pipeline("bpe", backend, {}, lowercase=False)
        return backend
    if (folder / "vocab.txt").is_file():
        backend = Backend(models.WordPiece.from_file(str(folder / "vocab.txt"), unk_token="[UNK]"))
        _add_pipeline("wordpiece", backend, DEFAULT_SPECIALS["wordpiece"], lowercase=True)
        return backend
    return None
