"""Tokenizers: a thin wrapper around the `tokenizers` library that knows a model family's special tokens."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as Backend

from .errors import DataError

SPECIAL_ROLES = ("pad", "unk", "bos", "eos", "mask", "cls", "sep")
SPECIALS_FILE = "lmforge_tokenizer.json"


class Tokenizer:
    """Text <-> token ids. `specials` maps a role (pad, unk, bos, eos, mask, cls, sep) to its token string."""

    def __init__(self, backend: Backend, specials: dict[str, str] | None = None):
        self.backend = backend
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
    def special_ids(self) -> set[int]:
        """Ids of every special/added token (never masked, never counted as text)."""
        ids = {self.backend.token_to_id(t) for t in self.specials.values()}
        ids |= {i for i, tok in self.backend.get_added_tokens_decoder().items() if tok.special}
        return {i for i in ids if i is not None}

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

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
        self.backend.save(str(folder / "tokenizer.json"))
        (folder / SPECIALS_FILE).write_text(json.dumps({"specials": self.specials}, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> "Tokenizer":
        """Read a folder holding tokenizer.json (and, when written by lmforge, its special-token roles)."""
        folder = Path(folder)
        path = folder / "tokenizer.json" if folder.is_dir() else folder
        if not path.is_file():
            raise DataError(f"no tokenizer.json in {folder}; train one with `lmforge tokenizer train` "
                            "or point to a folder that has one")
        try:
            backend = Backend.from_file(str(path))
        except Exception as error:  # the tokenizers library raises a plain Exception for bad files
            raise DataError(f"{path} is not a valid tokenizer.json ({error})") from None
        specials_path = path.parent / SPECIALS_FILE
        specials = json.loads(specials_path.read_text(encoding="utf-8"))["specials"] if specials_path.is_file() \
            else guess_specials(backend)
        return cls(backend, specials)


def guess_specials(backend: Backend) -> dict[str, str]:
    """Special-token roles from the conventional token strings of BERT, GPT-2, RoBERTa/BART and T5."""
    vocab = backend.get_vocab(with_added_tokens=True)
    candidates = {
        "pad": ["[PAD]", "<pad>", "<|pad|>"], "unk": ["[UNK]", "<unk>"], "cls": ["[CLS]"], "sep": ["[SEP]"],
        "mask": ["[MASK]", "<mask>"], "bos": ["<s>", "<|endoftext|>"], "eos": ["</s>", "<|endoftext|>"],
    }
    return {role: next(t for t in options if t in vocab)
            for role, options in candidates.items() if any(t in vocab for t in options)}
