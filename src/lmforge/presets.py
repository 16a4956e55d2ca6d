"""Named architectures: published models at their published sizes, and tiny ones for tests.

`presets.get("gpt2")` returns a fresh `ModelConfig`; `presets.names()` lists them. Each published
preset's backbone has exactly the parameter count of the original model (tested).
"""

from __future__ import annotations

from typing import Callable

from .config import ModelConfig
from .errors import ConfigError

# ---- family templates: the fields that make an architecture what it is ---------------------------


def template(doc: str, base: Callable[..., ModelConfig] | None = None, **fields) -> Callable[..., ModelConfig]:
    """A family's architecture as data: the returned `make(**sizes)` gives a `ModelConfig` of `fields` (over
    those of the `base` template) with `sizes`, and any other field, given over them."""
    fields = {**(base.fields if base is not None else {}), **fields}

    def make(**sizes) -> ModelConfig:
        return ModelConfig(**{**fields, **sizes})

    make.__doc__, make.fields = doc, fields
    return make


gpt2_like = template(
    "GPT-2: pre-LayerNorm, learned positions, tanh-GELU, final norm, tied LM head.",
    family="decoder", vocab_size=50257, max_positions=1024, positions="learned",
    norm="layer", norm_eps=1e-5, norm_placement="pre", final_norm=True, activation="gelu_tanh",
    tie_embeddings=True, bos_token_id=50256, eos_token_id=50256,
    classifier_pool="last", classifier_bias=False,  # GPT2ForSequenceClassification: last real token
    dropout=0.1, attention_dropout=0.1,
)

bert_like = template(
    "BERT: post-LayerNorm, learned positions + token types, embedding norm, pooler, MLM transform.",
    family="encoder", vocab_size=30522, max_positions=512, positions="learned", type_vocab_size=2,
    norm="layer", norm_eps=1e-12, norm_placement="post", embedding_norm=True, final_norm=False,
    activation="gelu", tie_embeddings=True, mlm_transform=True, pooler=True,
    classifier_pool="pooler", pad_token_id=0, mask_token_id=103, dropout=0.1, attention_dropout=0.1,
)

distilbert_like = template(
    "DistilBERT: BERT without token types or pooler; a dense + ReLU before the classifier.",
    family="encoder", vocab_size=30522, max_positions=512, positions="learned", type_vocab_size=0,
    norm="layer", norm_eps=1e-12, norm_placement="post", embedding_norm=True, final_norm=False,
    activation="gelu", tie_embeddings=True, mlm_transform=True, pooler=False,
    classifier_pool="first", classifier_hidden_act="relu", pad_token_id=0, mask_token_id=103,
    dropout=0.1, attention_dropout=0.1, classifier_dropout=0.2,
)

roberta_like = template(
    "RoBERTa: BERT with byte-level BPE, positions offset past the padding index, tanh classifier.",
    family="encoder", vocab_size=50265, max_positions=512, positions="learned", position_offset=2,
    type_vocab_size=1, norm="layer", norm_eps=1e-5, norm_placement="post", embedding_norm=True,
    final_norm=False, activation="gelu", tie_embeddings=True, mlm_transform=True, pooler=True,
    classifier_pool="first", classifier_hidden_act="tanh", pad_token_id=1, bos_token_id=0,
    eos_token_id=2, mask_token_id=50264, dropout=0.1, attention_dropout=0.1,
)

bart_like = template(
    ("BART: post-LayerNorm encoder-decoder, learned positions offset by 2, embedding norm, GELU, tied head "
     "with a fixed final-logits bias."),
    family="encoder-decoder", vocab_size=50265, max_positions=1024, positions="learned",
    position_offset=2, norm="layer", norm_eps=1e-5, norm_placement="post", embedding_norm=True,
    final_norm=False, activation="gelu", tie_embeddings=True, final_logits_bias=True,
    pad_token_id=1, bos_token_id=0, eos_token_id=2, mask_token_id=50264, decoder_start_token_id=2,
    dropout=0.1, attention_dropout=0.0,
)

t5_like = template(
    ("T5 (v1.0): pre-RMSNorm without bias, relative position buckets, ReLU, no attention scaling, tied "
     "head rescaled by d_model**-0.5."),
    family="encoder-decoder", vocab_size=32128, max_positions=512, positions="relative",
    relative_buckets=32, relative_max_distance=128, norm="rms", norm_eps=1e-6, norm_placement="pre",
    final_norm=True, activation="relu", bias=False, scale_attention=False, tie_embeddings=True,
    scale_tied_logits=True, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    dropout=0.1, attention_dropout=0.0, init_std=0.05,
)

t5_v1_1_like = template(
    "T5 v1.1: T5 with a gated tanh-GELU feed-forward and an untied LM head.", t5_like,
    activation="gelu_tanh", gated_mlp=True, tie_embeddings=False, scale_tied_logits=False,
)

llama_like = template(
    ("Llama and its descendants (Mistral, Qwen2, Qwen3, SmolLM2, TinyLlama): pre-RMSNorm, rotary "
     "positions, grouped-query attention, SwiGLU feed-forward, no biases, no dropout; sequence "
     "classification reads the last real token."),
    family="decoder", positions="rotary", norm="rms", norm_eps=1e-5, norm_placement="pre", final_norm=True,
    activation="silu", gated_mlp=True, bias=False, tie_embeddings=False, classifier_pool="last",
    classifier_bias=False, dropout=0.0, attention_dropout=0.0,
)

qwen_like = template(
    "Qwen2 / Qwen2.5: Llama with biases on q, k and v, theta 1e6 and the Qwen vocabulary.", llama_like,
    vocab_size=151936, qkv_bias=True, rotary_theta=1e6, norm_eps=1e-6, bos_token_id=151643, eos_token_id=151643,
)


# ---- the presets -----------------------------------------------------------------------------------

_PRESETS: dict[str, Callable[[], ModelConfig]] = {
    # published sizes
    "gpt2": lambda: gpt2_like(d_model=768, n_heads=12, n_layers=12, d_ff=3072),
    "gpt2-medium": lambda: gpt2_like(d_model=1024, n_heads=16, n_layers=24, d_ff=4096),
    "bert-base-uncased": lambda: bert_like(d_model=768, n_heads=12, n_layers=12, d_ff=3072),
    "bert-large-uncased": lambda: bert_like(d_model=1024, n_heads=16, n_layers=24, d_ff=4096),
    "minilm-l6": lambda: bert_like(d_model=384, n_heads=12, n_layers=6, d_ff=1536),
    "distilbert-base-uncased": lambda: distilbert_like(d_model=768, n_heads=12, n_layers=6, d_ff=3072),
    "roberta-base": lambda: roberta_like(d_model=768, n_heads=12, n_layers=12, d_ff=3072),
    "bart-base": lambda: bart_like(d_model=768, n_heads=12, n_layers=6, n_decoder_layers=6, d_ff=3072),
    "t5-small": lambda: t5_like(d_model=512, n_heads=8, n_layers=6, d_ff=2048, d_head=64),
    "t5-base": lambda: t5_like(d_model=768, n_heads=12, n_layers=12, d_ff=3072, d_head=64),
    "t5-v1_1-small": lambda: t5_v1_1_like(d_model=512, n_heads=6, n_layers=8, d_ff=1024, d_head=64),
    "smollm2-135m": lambda: llama_like(vocab_size=49152, d_model=576, n_heads=9, n_kv_heads=3, n_layers=30,
                                       d_ff=1536, max_positions=8192, rotary_theta=100000.0, tie_embeddings=True,
                                       bos_token_id=1, eos_token_id=2),
    "qwen2.5-0.5b": lambda: qwen_like(d_model=896, n_heads=14, n_kv_heads=2, n_layers=24, d_ff=4864,
                                      max_positions=32768, tie_embeddings=True),
    "qwen3-0.6b": lambda: qwen_like(d_model=1024, n_heads=16, n_kv_heads=8, d_head=128, n_layers=28, d_ff=3072,
                                    max_positions=40960, qkv_bias=False, qk_norm=True, tie_embeddings=True,
                                    eos_token_id=151645),
    "tinyllama-1.1b": lambda: llama_like(vocab_size=32000, d_model=2048, n_heads=32, n_kv_heads=4, n_layers=22,
                                         d_ff=5632, max_positions=2048, bos_token_id=1, eos_token_id=2),
    "llama-3.2-1b": lambda: llama_like(vocab_size=128256, d_model=2048, n_heads=32, n_kv_heads=8, n_layers=16,
                                       d_ff=8192, max_positions=131072, rotary_theta=500000.0, rope_scaling="llama3",
                                       rope_factor=32.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                                       rope_original_max_positions=8192, tie_embeddings=True,
                                       bos_token_id=128000, eos_token_id=128001),
    # tiny ones for tests and laptops
    "tiny-gpt2": lambda: gpt2_like(vocab_size=512, d_model=64, n_heads=4, n_layers=2, d_ff=256,
                                   max_positions=128, bos_token_id=0, eos_token_id=0),
    "tiny-bert": lambda: bert_like(vocab_size=512, d_model=64, n_heads=4, n_layers=2, d_ff=256,
                                   max_positions=128, mask_token_id=4),
    "tiny-distilbert": lambda: distilbert_like(vocab_size=512, d_model=64, n_heads=4, n_layers=2, d_ff=256,
                                               max_positions=128, mask_token_id=4),
    "tiny-roberta": lambda: roberta_like(vocab_size=512, d_model=64, n_heads=4, n_layers=2, d_ff=256,
                                         max_positions=128, mask_token_id=4),
    "tiny-bart": lambda: bart_like(vocab_size=512, d_model=64, n_heads=4, n_layers=2, n_decoder_layers=2,
                                   d_ff=256, max_positions=128, mask_token_id=4),
    "tiny-t5": lambda: t5_like(vocab_size=512, d_model=64, n_heads=4, n_layers=2, d_ff=256, d_head=16,
                               max_positions=128),
    "tiny-t5-v1_1": lambda: t5_v1_1_like(vocab_size=512, d_model=64, n_heads=4, n_layers=2, d_ff=128,
                                         d_head=16, max_positions=128),
    "tiny-llama": lambda: llama_like(vocab_size=512, d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=176,
                                     max_positions=256, bos_token_id=0, eos_token_id=0),
    "tiny-mistral": lambda: llama_like(vocab_size=512, d_model=64, n_heads=4, n_kv_heads=1, n_layers=2, d_ff=176,
                                       max_positions=256, sliding_window=32, bos_token_id=0, eos_token_id=0),
    "tiny-qwen2": lambda: qwen_like(vocab_size=512, d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=176,
                                    max_positions=256, tie_embeddings=True, bos_token_id=0, eos_token_id=0),
    "tiny-qwen3": lambda: qwen_like(vocab_size=512, d_model=64, n_heads=4, n_kv_heads=2, d_head=32, n_layers=2,
                                    d_ff=176, max_positions=256, qkv_bias=False, qk_norm=True, tie_embeddings=True,
                                    bos_token_id=0, eos_token_id=0),
    "tiny-transformer": lambda: ModelConfig(
        family="encoder-decoder", vocab_size=512, d_model=64, n_heads=4, n_layers=2, d_ff=256,
        max_positions=128, positions="sinusoidal", norm_placement="post", final_norm=False,
        activation="relu", scale_embeddings=True, pad_token_id=0, eos_token_id=2, decoder_start_token_id=1,
    ),
}


def names() -> list[str]:
    """All preset names."""
    return list(_PRESETS)


def get(name: str) -> ModelConfig:
    """A fresh, validated `ModelConfig` for a preset name."""
    if name not in _PRESETS:
        close = [n for n in _PRESETS if name.lower() in n or n in name.lower()]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown preset {name!r}{hint}; available presets: {', '.join(_PRESETS)}")
    config = _PRESETS[name]()
    config.name = name
    return config.validate()
