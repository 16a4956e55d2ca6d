"""BART: post-LayerNorm encoder-decoder, positions offset by 2, a fixed (1, V) final_logits_bias."""

from __future__ import annotations

from ....config import ModelConfig
from ..rules import linear, tensor
from ..spec import HF_ACTIVATION, ConfigReader, HFFormat

POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding keeps two unused rows first


def attention(ours: str, hf: str) -> tuple:
    return (linear(f"{ours}.q", f"{hf}.q_proj"), linear(f"{ours}.kv", (f"{hf}.k_proj", f"{hf}.v_proj")),
            linear(f"{ours}.o", f"{hf}.out_proj"))


def stack(name: str, cross: bool) -> tuple:
    ours, hf = f"{name}.blocks.{{i}}", f"{name}.layers.{{i}}"
    rules = (tensor(f"{name}.positions.weight", f"{name}.embed_positions.weight"),
             linear(f"{name}.embed_norm", f"{name}.layernorm_embedding"),
             *attention(f"{ours}.self_attn", f"{hf}.self_attn"),
             linear(f"{ours}.attn_norm", f"{hf}.self_attn_layer_norm"),
             linear(f"{ours}.mlp.up", f"{hf}.fc1"), linear(f"{ours}.mlp.down", f"{hf}.fc2"),
             linear(f"{ours}.mlp_norm", f"{hf}.final_layer_norm"))
    if cross:
        rules += (*attention(f"{ours}.cross_attn", f"{hf}.encoder_attn"),
                  linear(f"{ours}.cross_norm", f"{hf}.encoder_attn_layer_norm"))
    return rules


BACKBONE = (tensor("embed.weight", "shared.weight|encoder.embed_tokens.weight|decoder.embed_tokens.weight"),
            *stack("encoder", cross=False), *stack("decoder", cross=True))
HEADS = {"seq2seq-lm": (tensor("head.final_logits_bias", "final_logits_bias", layout="row"),
                        tensor("head.weight", "lm_head.weight"))}


def to_config(hf: ConfigReader, names: set[str], task: str) -> ModelConfig:
    hf.refuse("normalize_before", (False,), "pre-LayerNorm BART (mBART) is a different architecture")
    hf.refuse("add_final_layer_norm", (False,), "a final layer norm is not part of BART")
    return ModelConfig(
        family="encoder-decoder", vocab_size=hf.need("vocab_size"), d_model=hf.need("d_model"),
        n_heads=hf.same("encoder_attention_heads", "decoder_attention_heads"), n_layers=hf.need("encoder_layers"),
        n_decoder_layers=hf.need("decoder_layers"), d_ff=hf.same("encoder_ffn_dim", "decoder_ffn_dim"),
        max_positions=hf.need("max_position_embeddings"), positions="learned", position_offset=POSITION_OFFSET,
        norm="layer", norm_eps=1e-5, norm_placement="post", embedding_norm=True, final_norm=False,
        activation=hf.activation("activation_function", "gelu"), scale_embeddings=hf.get("scale_embedding", False),
        tie_embeddings=hf.get("tie_word_embeddings", True), final_logits_bias=True,
        dropout=hf.get("dropout", 0.1), attention_dropout=hf.get("attention_dropout", 0.0),
        activation_dropout=hf.get("activation_dropout", 0.0), init_std=hf.get("init_std", 0.02),
        pad_token_id=hf.get("pad_token_id", 1), bos_token_id=hf.get("bos_token_id", 0),
        eos_token_id=hf.get("eos_token_id", 2), decoder_start_token_id=hf.get("decoder_start_token_id", 2),
    )


def from_config(c: ModelConfig) -> dict:
    return dict(
        vocab_size=c.vocab_size, d_model=c.d_model, encoder_attention_heads=c.n_heads,
        decoder_attention_heads=c.n_heads, encoder_layers=c.n_layers, decoder_layers=c.decoder_layers,
        encoder_ffn_dim=c.d_ff, decoder_ffn_dim=c.d_ff, max_position_embeddings=c.max_positions,
        activation_function=HF_ACTIVATION[c.activation], scale_embedding=c.scale_embeddings,
        tie_word_embeddings=c.tie_embeddings, dropout=c.dropout, attention_dropout=c.attention_dropout,
        activation_dropout=c.activation_dropout, init_std=c.init_std, pad_token_id=c.pad_token_id,
        bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, decoder_start_token_id=c.decoder_start_token_id,
        forced_eos_token_id=c.eos_token_id, is_encoder_decoder=True,
    )


ONLY = "lmforge encoder-decoders have only the seq2seq-lm and embedding tasks"
FORMAT = HFFormat(
    model_type="bart", base_prefix="model.", backbone=BACKBONE, heads=HEADS,
    architectures={"BartForConditionalGeneration": "seq2seq-lm", "BartModel": "embedding"},
    to_config=to_config, from_config=from_config, tokenizer="byte-bpe", tied_copies=("lm_head.weight",),
    ignore=(r"(encoder|decoder)\.version",),
    unsupported={"BartForSequenceClassification": ONLY, "BartForQuestionAnswering": ONLY,
                 "BartForCausalLM": "a BART decoder alone is not an lmforge architecture"},
)
