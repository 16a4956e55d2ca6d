"""T5 (v1.0: ReLU, tied and rescaled head) and T5 v1.1 (gated GELU: gate = wi_0, up = wi_1, own head).

One relative-position table per stack sits in its first block; RMS norms and linears have no bias."""

from __future__ import annotations

from ....config import ModelConfig
from ....errors import CheckpointError
from ..rules import linear, tensor
from ..spec import ACTIVATIONS, HF_ACTIVATION, ConfigReader, HFFormat


def attention(ours: str, hf: str) -> tuple:
    return (linear(f"{ours}.q", f"{hf}.q"), linear(f"{ours}.kv", (f"{hf}.k", f"{hf}.v")), linear(f"{ours}.o", f"{hf}.o"))


def stack(name: str, cross: bool) -> tuple:
    ours, hf = f"{name}.blocks.{{i}}", f"{name}.block.{{i}}.layer"
    mlp = f"{hf}.{2 if cross else 1}"
    rules = (tensor(f"{name}.relative_bias.weight", f"{name}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
             *attention(f"{ours}.self_attn", f"{hf}.0.SelfAttention"), linear(f"{ours}.attn_norm", f"{hf}.0.layer_norm"),
             linear(f"{ours}.mlp.up", f"{mlp}.DenseReluDense.wi", when="!gated_mlp"),
             linear(f"{ours}.mlp.gate", f"{mlp}.DenseReluDense.wi_0", when="gated_mlp"),
             linear(f"{ours}.mlp.up", f"{mlp}.DenseReluDense.wi_1", when="gated_mlp"),
             linear(f"{ours}.mlp.down", f"{mlp}.DenseReluDense.wo"), linear(f"{ours}.mlp_norm", f"{mlp}.layer_norm"),
             linear(f"{name}.final_norm", f"{name}.final_layer_norm"))
    if cross:
        rules += (*attention(f"{ours}.cross_attn", f"{hf}.1.EncDecAttention"),
                  linear(f"{ours}.cross_norm", f"{hf}.1.layer_norm"))
    return rules


BACKBONE = (tensor("embed.weight", "shared.weight|encoder.embed_tokens.weight|decoder.embed_tokens.weight"),
            *stack("encoder", cross=False), *stack("decoder", cross=True))
HEADS = {"seq2seq-lm": (tensor("head.weight", "lm_head.weight"),)}


def to_config(hf: ConfigReader, names: set[str], task: str) -> ModelConfig:
    projection = hf.get("feed_forward_proj", "relu")
    gated = projection.startswith("gated-")
    activation = "gelu_new" if projection == "gated-gelu" else projection.removeprefix("gated-")
    if activation not in ACTIVATIONS:
        raise CheckpointError(f"{hf.path}: feed_forward_proj={projection!r} uses an activation lmforge does not "
                              "implement; supported: relu, gelu, gelu_new, silu and their gated- forms")
    tied = hf.get("tie_word_embeddings", True)
    # transformers 5 records T5's output rescaling in scale_decoder_outputs; older files imply it by tying
    scaled = hf.get("scale_decoder_outputs", tied)
    return ModelConfig(
        family="encoder-decoder", vocab_size=hf.need("vocab_size"), d_model=hf.need("d_model"),
        n_heads=hf.need("num_heads"), n_layers=hf.need("num_layers"),
        n_decoder_layers=hf.get("num_decoder_layers", hf.need("num_layers")), d_ff=hf.need("d_ff"),
        d_head=hf.need("d_kv"), max_positions=hf.get("n_positions", 512), positions="relative",
        relative_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_max_distance=hf.get("relative_attention_max_distance", 128), norm="rms",
        norm_eps=hf.get("layer_norm_epsilon", 1e-6), norm_placement="pre", final_norm=True,
        activation=ACTIVATIONS[activation], gated_mlp=gated,
        bias=False, scale_attention=False, tie_embeddings=tied, scale_tied_logits=bool(tied and scaled),
        dropout=hf.get("dropout_rate", 0.1), attention_dropout=0.0,
        init_std=hf.get("initializer_factor", 1.0) * 0.05, pad_token_id=hf.get("pad_token_id", 0),
        eos_token_id=hf.get("eos_token_id", 1), decoder_start_token_id=hf.get("decoder_start_token_id", 0),
    )


def from_config(c: ModelConfig) -> dict:
    activation = HF_ACTIVATION[c.activation]
    projection = ("gated-gelu" if activation == "gelu_new" else f"gated-{activation}") if c.gated_mlp else activation
    return dict(
        vocab_size=c.vocab_size, d_model=c.d_model, num_heads=c.n_heads, num_layers=c.n_layers,
        num_decoder_layers=c.decoder_layers, d_ff=c.d_ff, d_kv=c.head_dim, n_positions=c.max_positions,
        relative_attention_num_buckets=c.relative_buckets, relative_attention_max_distance=c.relative_max_distance,
        layer_norm_epsilon=c.norm_eps, feed_forward_proj=projection, tie_word_embeddings=c.tie_embeddings,
        scale_decoder_outputs=c.scale_tied_logits, dropout_rate=c.dropout, initializer_factor=c.init_std / 0.05,
        pad_token_id=c.pad_token_id, eos_token_id=c.eos_token_id, decoder_start_token_id=c.decoder_start_token_id,
        is_encoder_decoder=True,
    )


ONLY = "lmforge encoder-decoders have only the seq2seq-lm and embedding tasks"
FORMAT = HFFormat(
    model_type="t5", base_prefix="", backbone=BACKBONE, heads=HEADS,
    architectures={"T5ForConditionalGeneration": "seq2seq-lm", "T5Model": "embedding"},
    to_config=to_config, from_config=from_config, tokenizer="sentencepiece", tied_copies=("lm_head.weight",),
    ignore=(r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight",),
    unsupported={"T5ForSequenceClassification": ONLY, "T5ForTokenClassification": ONLY,
                 "T5ForQuestionAnswering": ONLY,
                 "T5EncoderModel": "a T5 encoder without its decoder is not an lmforge encoder-decoder; "
                                   "load a T5Model or T5ForConditionalGeneration checkpoint"},
)
