"""`ModelConfig`: the whole architecture of a model as plain data (JSON round-trip).

One dataclass describes GPT-2, BERT, DistilBERT, RoBERTa, BART, T5, T5 v1.1, Llama, Mistral, Qwen2
and Qwen3 exactly: every difference between them is a field here, never a branch on a model's name.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .files import check_fields, coerce_fields, read_mapping
from .labels import label_names

FAMILIES = ("decoder", "encoder", "encoder-decoder")
POSITIONS = ("learned", "sinusoidal", "relative", "rotary", "none")
ROPE_SCALINGS = ("none", "linear", "llama3", "yarn")
NORMS = ("layer", "rms")
PLACEMENTS = ("pre", "post")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")
CLASSIFIER_POOLS = ("pooler", "first", "last", "mean")


def first_id(*ids: int | None) -> int | None:
    """The first of `ids` that exists (None when none does)."""
    return next((i for i in ids if i is not None), None)


def padding_id(pad: int | None, eos: int | None, sep: int | None = None, *, owner: str, fix: str) -> int:
    """The one padding-id policy: padded slots of a batch hold the pad token, else end-of-sequence (GPT-2 has
    no pad token), else the separator. Padded slots are masked out, or follow the end of a sequence, so any
    real token serves; 0 is one when it is the pad (T5). `owner` without any of the three cannot pad: a
    ConfigError saying `fix`."""
    chosen = first_id(pad, eos, sep)
    if chosen is None:
        raise ConfigError(f"{owner} has no pad, end-of-sequence or separator token to pad a batch with; {fix}")
    return chosen


@dataclass
class ModelConfig:
    """Architecture of a Transformer language model of any family.

    Sizes: `n_layers` is the depth of the only stack (decoder-only, encoder-only) or of the encoder
    (encoder-decoder, whose decoder has `n_decoder_layers`, default `n_layers`). `d_head` defaults
    to `d_model // n_heads`; T5 sets it independently (its `d_kv`).
    """

    family: str = "decoder"
    vocab_size: int = 50257
    d_model: int = 768
    n_heads: int = 12
    n_kv_heads: int | None = None  # key/value heads shared by groups of query heads (GQA, 1 = MQA); None = n_heads
    n_layers: int = 12
    n_decoder_layers: int | None = None
    d_ff: int = 3072
    d_head: int | None = None
    max_positions: int = 1024  # longest sequence the model accepts

    # positions: learned table (with `position_offset` unused rows first, as BART and RoBERTa have),
    # fixed sinusoids, T5 relative-position buckets (one bias table per stack), or none.
    positions: str = "learned"
    position_offset: int = 0
    relative_buckets: int = 32
    relative_max_distance: int = 128
    type_vocab_size: int = 0  # BERT token types (segments); 0 = none
    # rotary positions (positions="rotary"), rotated in the half-split layout of Llama checkpoints:
    # theta, the share of each head's dimensions that rotates, and a frequency scaling
    # (linear: all frequencies / factor; llama3: low frequencies / factor, smooth in between;
    # yarn: NTK-by-parts interpolation between rope_beta_fast and rope_beta_slow rotations, with
    # cos/sin scaled by rope_attention_factor, default 0.1 * ln(factor) + 1)
    rotary_theta: float = 10000.0
    rotary_fraction: float = 1.0
    rope_scaling: str = "none"
    rope_factor: float = 1.0
    rope_original_max_positions: int | None = None  # the pretraining length (llama3, yarn); None = max_positions
    rope_low_freq_factor: float = 1.0  # llama3
    rope_high_freq_factor: float = 4.0  # llama3
    rope_beta_fast: float = 32.0  # yarn
    rope_beta_slow: float = 1.0  # yarn
    rope_attention_factor: float | None = None  # yarn
    rope_truncate: bool = True  # yarn: round the correction range to whole dimensions
    # attention window: layers in `sliding_layers` (None = all) attend to the last `sliding_window` tokens only
    sliding_window: int | None = None
    sliding_layers: list[int] | None = None

    # normalisation and residual layout
    norm: str = "layer"
    norm_eps: float = 1e-5
    norm_placement: str = "pre"  # pre: x + f(norm(x)) (GPT-2, T5); post: norm(x + f(x)) (BERT, BART)
    embedding_norm: bool = False  # a norm right after the embeddings (BERT, BART)
    final_norm: bool = True  # a norm after the last block (GPT-2 ln_f, T5 final_layer_norm)

    # feed-forward and linear layers
    activation: str = "gelu_tanh"
    gated_mlp: bool = False  # act(x W_gate) * (x W_up), as T5 v1.1
    bias: bool = True  # biases in attention and feed-forward linears (T5: none)
    qkv_bias: bool | None = None  # q/k/v projections (Qwen2: yes, while o and the MLP have none); None = `bias`
    out_bias: bool | None = None  # attention output projection; None = `bias`
    mlp_bias: bool | None = None  # feed-forward linears; None = `bias`
    qk_norm: bool = False  # an RMSNorm over each head's queries and keys before the rotation (Qwen3)
    scale_attention: bool = True  # divide scores by sqrt(d_head) (T5 folds it into the init)
    scale_embeddings: bool = False  # multiply token embeddings by sqrt(d_model)

    # output heads
    tie_embeddings: bool = True  # LM / MLM decoder shares the token embedding matrix
    scale_tied_logits: bool = False  # T5: hidden * d_model**-0.5 before the tied head
    final_logits_bias: bool = False  # BART: a fixed (buffer) bias added to LM logits
    mlm_transform: bool = True  # MLM head: dense + activation + norm before the decoder
    pooler: bool = False  # BERT pooler: dense + tanh on the first token, part of the backbone
    classifier_pool: str = "first"  # which vector a sequence classifier reads
    classifier_hidden_act: str | None = None  # a dense + act before the output (RoBERTa tanh, DistilBERT relu)
    classifier_bias: bool = True
    num_labels: int = 2
    id2label: dict[int, str] | None = None

    # regularisation and initialisation
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    classifier_dropout: float | None = None  # default: `dropout`
    init_std: float = 0.02

    # special tokens the model itself must know about
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None  # several ids: generation stops on each (Llama 3 chat)
    mask_token_id: int | None = None
    decoder_start_token_id: int | None = None

    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (source model, ...)

    # ---- derived values -------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads

    @property
    def positions_bounded(self) -> bool:
        """Whether `max_positions` is a hard limit: absolute positions read a table of that many rows
        (learned, sinusoidal); relative or no positions accept any length."""
        return self.positions in ("learned", "sinusoidal")

    @property
    def label_names(self) -> dict[int, str]:
        """Class id -> name: `id2label`, or LABEL_0, LABEL_1, ... (Hugging Face's default)."""
        return label_names(self.id2label, self.num_labels)

    @property
    def kv_heads(self) -> int:
        """Key/value heads of every attention layer: what the KV cache is sized by."""
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def use_qkv_bias(self) -> bool:
        return self.bias if self.qkv_bias is None else self.qkv_bias

    @property
    def use_out_bias(self) -> bool:
        return self.bias if self.out_bias is None else self.out_bias

    @property
    def use_mlp_bias(self) -> bool:
        return self.bias if self.mlp_bias is None else self.mlp_bias

    @property
    def eos_ids(self) -> list[int]:
        """Every token id that ends a generated sequence (`eos_token_id` may be one id or a list)."""
        eos = self.eos_token_id
        return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)

    @property
    def padding_id(self) -> int:
        """The id padded slots hold (`padding_id`'s policy: pad_token_id, else the first end-of-sequence id)."""
        return padding_id(self.pad_token_id, first_id(*self.eos_ids), owner=f"the model config{self._named()}",
                          fix="set pad_token_id (or eos_token_id) in its config.json")

    def _named(self) -> str:
        return f" of {self.name}" if self.name else ""

    @property
    def rotary_dim(self) -> int:
        """How many dimensions of each head rotate (even, HF's int(head_dim * partial_rotary_factor))."""
        return int(self.head_dim * self.rotary_fraction)

    def window_of(self, layer: int) -> int | None:
        """The attention window of layer `layer` (None: it sees every earlier token)."""
        if self.sliding_window is None or (self.sliding_layers is not None and layer not in self.sliding_layers):
            return None
        return self.sliding_window

    @property
    def decoder_layers(self) -> int:
        return self.n_decoder_layers if self.n_decoder_layers is not None else self.n_layers

    @property
    def is_encoder_decoder(self) -> bool:
        return self.family == "encoder-decoder"

    @property
    def label2id(self) -> dict[str, int] | None:
        return None if self.id2label is None else {v: k for k, v in self.id2label.items()}

    # ---- validation -----------------------------------------------------------------------
    def validate(self) -> "ModelConfig":
        """Check every field; raise `ConfigError` naming the field and the fix. Returns self."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"invalid model config{f' {self.name!r}' if self.name else ''}: {message}")

        def choice(name: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, name)
            need(value in allowed, f"{name}={value!r} is not one of {', '.join(allowed)}")

        check_fields(self, f"model config{f' {self.name!r}' if self.name else ''}")
        choice("family", FAMILIES)
        choice("positions", POSITIONS)
        choice("norm", NORMS)
        choice("norm_placement", PLACEMENTS)
        choice("activation", ACTIVATIONS)
        choice("classifier_pool", CLASSIFIER_POOLS)
        for name in ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_positions"):
            value = getattr(self, name)
            need(isinstance(value, int) and value > 0, f"{name} must be a positive integer, got {value!r}")
        if self.d_head is None:
            need(
                self.d_model % self.n_heads == 0,
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                f"choose n_heads dividing d_model (e.g. {_divisor_near(self.d_model, self.n_heads)}) or set d_head",
            )
        else:
            need(isinstance(self.d_head, int) and self.d_head > 0, f"d_head must be a positive integer, got {self.d_head!r}")
        if self.n_kv_heads is not None:
            need(isinstance(self.n_kv_heads, int) and self.n_kv_heads > 0,
                 f"n_kv_heads must be a positive integer, got {self.n_kv_heads!r}")
            need(self.n_heads % self.n_kv_heads == 0,
                 f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}; each key/value head "
                 f"serves a whole group of query heads: choose n_kv_heads dividing n_heads "
                 f"(e.g. {_divisor_near(self.n_heads, self.n_kv_heads)})")
        self._validate_rotary(need)
        if self.sliding_window is not None:
            need(isinstance(self.sliding_window, int) and self.sliding_window > 0,
                 f"sliding_window must be a positive integer or null, got {self.sliding_window!r}")
        if self.sliding_layers is not None:
            layers = self.decoder_layers if self.is_encoder_decoder else self.n_layers
            need(all(isinstance(i, int) and 0 <= i < layers for i in self.sliding_layers),
                 f"sliding_layers must list layer indexes 0..{layers - 1}, got {self.sliding_layers!r}")
        if self.n_decoder_layers is not None:
            need(self.is_encoder_decoder, "n_decoder_layers is only meaningful for family='encoder-decoder'")
            need(self.n_decoder_layers > 0, f"n_decoder_layers must be positive, got {self.n_decoder_layers}")
        need(self.position_offset >= 0, f"position_offset must be >= 0, got {self.position_offset}")
        need(self.type_vocab_size >= 0, f"type_vocab_size must be >= 0, got {self.type_vocab_size}")
        if self.positions == "relative":
            need(self.relative_buckets > 1 and self.relative_max_distance > 1,
                 "relative_buckets and relative_max_distance must be > 1")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, name)
            need(0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value}")
        if self.classifier_dropout is not None:
            need(0.0 <= self.classifier_dropout < 1.0, f"classifier_dropout must be in [0, 1), got {self.classifier_dropout}")
        need(self.norm_eps > 0, f"norm_eps must be positive, got {self.norm_eps}")
        need(self.num_labels > 0, f"num_labels must be positive, got {self.num_labels}")
        if self.classifier_hidden_act is not None:
            need(self.classifier_hidden_act in ACTIVATIONS + ("tanh",),
                 f"classifier_hidden_act={self.classifier_hidden_act!r} is not one of {', '.join(ACTIVATIONS + ('tanh',))} or null")
        if self.classifier_pool == "pooler":
            need(self.pooler, "classifier_pool='pooler' needs pooler=true")
        if self.id2label is not None:
            need(sorted(self.id2label) == list(range(len(self.id2label))),
                 "id2label keys must be 0..num_labels-1")
            need(len(self.id2label) == self.num_labels,
                 f"id2label has {len(self.id2label)} labels but num_labels={self.num_labels}")
        need(self.eos_token_id is None or isinstance(self.eos_token_id, (int, list)),
             f"eos_token_id must be a token id, a list of them or null, got {self.eos_token_id!r}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "mask_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            for token in ([] if value is None else value if isinstance(value, list) else [value]):
                need(isinstance(token, int) and 0 <= token < self.vocab_size,
                     f"{name}={value} is outside the vocabulary (size {self.vocab_size})")
        if self.is_encoder_decoder:
            need(self.decoder_start_token_id is not None or self.pad_token_id is not None,
                 "an encoder-decoder needs decoder_start_token_id (or pad_token_id) to start decoding")
        return self

    def _validate_rotary(self, need) -> None:
        need(self.rope_scaling in ROPE_SCALINGS,
             f"rope_scaling={self.rope_scaling!r} is not a known rope scaling type; known types: "
             f"{', '.join(ROPE_SCALINGS)}")
        need(0.0 < self.rotary_fraction <= 1.0, f"rotary_fraction must be in (0, 1], got {self.rotary_fraction}")
        if self.positions == "rotary":
            need(self.rotary_dim >= 2 and self.rotary_dim % 2 == 0,
                 f"rotary_fraction={self.rotary_fraction} of head size {self.head_dim} rotates {self.rotary_dim} "
                 "dimensions; it must be an even number >= 2")
        need(self.rotary_theta > 0, f"rotary_theta must be positive, got {self.rotary_theta}")
        need(self.rope_factor > 0, f"rope_factor must be positive, got {self.rope_factor}")
        if self.rope_scaling == "llama3":
            need(self.rope_high_freq_factor > self.rope_low_freq_factor,
                 "llama3 rope scaling needs rope_high_freq_factor > rope_low_freq_factor")

    # ---- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.id2label is not None:
            data["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown model config field(s) {', '.join(unknown)}; valid fields are: {', '.join(sorted(known))}"
            )
        data = coerce_fields(cls, data)
        if isinstance(data.get("id2label"), dict):
            try:
                data["id2label"] = {int(k): str(v) for k, v in data["id2label"].items()}
            except ValueError:
                raise ConfigError("invalid model config: id2label keys must be class ids 0..num_labels-1") from None
        return cls(**data).validate()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"model config is not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise ConfigError("model config JSON must be an object of fields")
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        """Read a config from a `.json` or `.yaml` file (a plain architecture, not a checkpoint)."""
        data = read_mapping(path, "model config file")
        model = data.get("model", data)
        if not isinstance(model, dict):
            raise ConfigError(f"model config file {path}: 'model' must be a mapping of fields")
        return cls.from_dict(model)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes).validate()


def _divisor_near(n: int, target: int) -> int:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return min(divisors, key=lambda d: abs(d - target))
