"""Tokenizers of Hugging Face folders as `lmforge.Tokenizer`: tokenizer.json, or the classic files
(BERT vocab.txt -> WordPiece; GPT-2/RoBERTa/BART vocab.json + merges.txt -> byte-level BPE;
T5 spiece.model -> Unigram through the `tokenizers` library's SentencePiece reader)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Regex
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from ...errors import CheckpointError
from ...tokenizer import SPECIAL_ROLES, Tokenizer, guess_specials

SPECIAL_FILES = ("tokenizer_config.json", "special_tokens_map.json")
UNIGRAM, UNKNOWN, CONTROL = 1, 2, 3  # SentencePiece's model type and piece types


def load_hf_tokenizer(folder: str | Path) -> Tokenizer | None:
    """The tokenizer in a Hugging Face folder (special-token roles from its config files), or None
    when the folder has no tokenizer files. Public as `lmforge.checkpoint.hf.load_hf_tokenizer`."""
    folder = Path(folder)
    settings = read_settings(folder)
    if (folder / "tokenizer.json").is_file():
        backend = Backend.from_file(str(folder / "tokenizer.json"))
        backend.no_padding()  # transformers pads and truncates per call, not as saved in the file
        backend.no_truncation()
    elif (folder / "vocab.txt").is_file():
        backend = wordpiece(folder / "vocab.txt", settings)
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        backend = byte_level_bpe(folder / "vocab.json", folder / "merges.txt")
    elif (folder / "spiece.model").is_file():
        backend = sentencepiece(folder / "spiece.model")
    else:
        return None
    specials = {**guess_specials(backend), **configured_specials(settings, backend)}
    return Tokenizer(backend, specials, chat_template(folder, settings))


def chat_template(folder: Path, settings: dict[str, Any]) -> str | None:
    """chat_template.jinja (transformers 5 writes it) or tokenizer_config.json's `chat_template`: a string, or a
    list of {"name", "template"} of which the one named "default" is used."""
    path = folder / "chat_template.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    template = settings.get("chat_template")
    if isinstance(template, list):
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def read_settings(folder: Path) -> dict[str, Any]:
    """tokenizer_config.json merged over special_tokens_map.json (either may be absent)."""
    settings: dict[str, Any] = {}
    for name in reversed(SPECIAL_FILES):
        path = folder / name
        if path.is_file():
            try:
                settings.update(json.loads(path.read_text(encoding="utf-8")))
            except ValueError as error:
                raise CheckpointError(f"{path} is not valid JSON ({error})") from None
    return settings


def configured_specials(settings: dict[str, Any], backend: Backend) -> dict[str, str]:
    """Roles named in the config files (`pad_token`: "[PAD]" or {"content": "[PAD]", ...}) that exist."""
    roles = {}
    for role in SPECIAL_ROLES:
        value = settings.get(f"{role}_token")
        token = value.get("content") if isinstance(value, dict) else value
        if isinstance(token, str) and backend.token_to_id(token) is not None:
            roles[role] = token
    return roles


def wordpiece(vocab_path: Path, settings: dict[str, Any]) -> Backend:
    """BERT's pipeline: clean + (lowercase, strip accents) + CJK split, punctuation split, WordPiece, [CLS] x [SEP]."""
    vocab = {}
    for index, line in enumerate(vocab_path.read_text(encoding="utf-8").splitlines()):
        vocab.setdefault(line.rstrip("\r\n"), index)
    unk = settings.get("unk_token", "[UNK]")
    backend = Backend(models.WordPiece(vocab, unk_token=unk if isinstance(unk, str) else unk["content"],
                                       max_input_chars_per_word=100))
    lowercase = settings.get("do_lower_case", True)
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
        strip_accents=settings.get("strip_accents"), lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    cls, sep = "[CLS]", "[SEP]"
    if cls in vocab and sep in vocab:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    backend.add_special_tokens([t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in vocab])
    return backend


def byte_level_bpe(vocab_path: Path, merges_path: Path) -> Backend:
    """Byte-level BPE from vocab.json + merges.txt, no prefix space. GPT-2 adds no special tokens;
    a vocabulary with <s> and </s> (RoBERTa, BART) frames text as `<s> text </s>`."""
    try:
        model = models.BPE.from_file(str(vocab_path), str(merges_path))
    except Exception as error:  # tokenizers raises a plain Exception for unreadable files
        raise CheckpointError(f"{vocab_path} / {merges_path} are not a readable BPE vocabulary ({error})") from None
    backend = Backend(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    vocab = backend.get_vocab()
    if "<s>" in vocab and "</s>" in vocab:
        backend.post_processor = processors.RobertaProcessing(("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]),
                                                              trim_offsets=False, add_prefix_space=False)
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.add_special_tokens([t for t in ("<|endoftext|>", "<s>", "</s>", "<pad>", "<unk>", "<mask>") if t in vocab])
    return backend


def sentencepiece(model_path: Path) -> Backend:
    """A SentencePiece Unigram model (T5's spiece.model) rebuilt for the `tokenizers` library: the
    model's own normaliser (precompiled character map, extra-space removal), "▁" for spaces with a
    dummy prefix, its pieces and scores; T5 framing `text </s>`."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise CheckpointError(f"{model_path} needs the sentencepiece package to be read "
                              "(pip install sentencepiece), or provide tokenizer.json instead") from None
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(model_path.read_bytes())
    except Exception as error:  # protobuf's DecodeError
        raise CheckpointError(f"{model_path} is not a SentencePiece model ({error})") from None
    if proto.trainer_spec.model_type != UNIGRAM:
        raise CheckpointError(f"{model_path} is a SentencePiece model of type {proto.trainer_spec.model_type}; "
                              "lmforge reads Unigram models (T5) only; provide tokenizer.json instead")
    backend = Backend(models.Unigram([(p.piece, p.score) for p in proto.pieces], proto.trainer_spec.unk_id,
                                     proto.trainer_spec.byte_fallback))
    spec = proto.normalizer_spec
    steps = [normalizers.Precompiled(spec.precompiled_charsmap)] if spec.precompiled_charsmap else []
    if spec.remove_extra_whitespaces:  # only spaces: SentencePiece keeps newlines and tabs
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    backend.normalizer = normalizers.Sequence(steps)
    scheme = "always" if spec.add_dummy_prefix else "never"
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme, split=False)
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme, split=False)
    backend.add_special_tokens([p.piece for p in proto.pieces if p.type in (UNKNOWN, CONTROL)])
    eos = backend.token_to_id("</s>")
    if eos is not None:
        backend.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                               special_tokens=[("</s>", eos)])
    return backend


def save_hf_tokenizer(tokenizer: Tokenizer, folder: Path) -> None:
    """tokenizer.json plus a tokenizer_config.json naming the special tokens, as transformers reads them."""
    tokenizer.backend.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast",
              **{f"{role}_token": token for role, token in tokenizer.specials.items()}}
    if tokenizer.chat_template:
        config["chat_template"] = tokenizer.chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
