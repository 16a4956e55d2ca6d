"""GPT-2: Conv1D (in, out) matrices and a fused q|k|v `c_attn`."""

from __future__ import annotations

from ....config import ModelConfig
from ..rules import linear, tensor
from ..spec import HF_ACTIVATION, ConfigReader, HFFormat, labels_to_hf

B = "decoder.blocks.{i}"
BACKBONE = (
    tensor("embed.weight", "wte.weight"),
    tensor("decoder.positions.weight", "wpe.weight"),
    linear(f"{B}.self_attn.q+{B}.self_attn.kv", "h.{i}.attn.c_attn", layout="conv1d"),
    linear(f"{B}.self_attn.o", "h.{i}.attn.c_proj", layout="conv1d"),
    linear(f"{B}.attn_norm", "h.{i}.ln_1"),
    linear(f"{B}.mlp.up", "h.{i}.mlp.c_fc", layout="conv1d"),
    linear(f"{B}.mlp.down", "h.{i}.mlp.c_proj", layout="conv1d"),
    linear(f"{B}.mlp_norm", "h.{i}.ln_2"),
    linear("decoder.final_norm", "ln_f"),
)
HEADS = {
    "causal-lm": (tensor("head.weight", "lm_head.weight"),),
    "sequence-classification": (linear("head.out", "score"),),
    "token-classification": (linear("head.out", "classifier"),),
}


def to_config(hf: ConfigReader, names: set[str], task: str) -> ModelConfig:
    hf.refuse("add_cross_attention", (False,), "GPT-2 with cross-attention is not a decoder-only model")
    hf.refuse("scale_attn_by_inverse_layer_idx", (False,), "per-layer attention scaling is not implemented")
    d_model = hf.need("n_embd")
    return ModelConfig(
        family="decoder", vocab_size=hf.need("vocab_size"), d_model=d_model, n_heads=hf.need("n_head"),
        n_layers=hf.need("n_layer"), d_ff=hf.get("n_inner", 4 * d_model), max_positions=hf.need("n_positions"),
        positions="learned", norm="layer", norm_eps=hf.get("layer_norm_epsilon", 1e-5), norm_placement="pre",
        final_norm=True, activation=hf.activation("activation_function", "gelu_new"),
        scale_attention=hf.get("scale_attn_weights", True), tie_embeddings=hf.get("tie_word_embeddings", True),
        classifier_pool="last", classifier_bias=False, dropout=hf.get("resid_pdrop", 0.1),
        attention_dropout=hf.get("attn_pdrop", 0.1), classifier_dropout=hf.get("classifier_dropout"),
        init_std=hf.get("initializer_range", 0.02), pad_token_id=hf.get("pad_token_id"),
        bos_token_id=hf.get("bos_token_id"), eos_token_id=hf.get("eos_token_id"), **hf.labels(task),
    )


def from_config(c: ModelConfig) -> dict:
    return dict(
        vocab_size=c.vocab_size, n_embd=c.d_model, n_head=c.n_heads, n_layer=c.n_layers, n_inner=c.d_ff,
        n_positions=c.max_positions, layer_norm_epsilon=c.norm_eps, activation_function=HF_ACTIVATION[c.activation],
        scale_attn_weights=c.scale_attention, tie_word_embeddings=c.tie_embeddings, resid_pdrop=c.dropout,
        embd_pdrop=c.dropout, attn_pdrop=c.attention_dropout, classifier_dropout=c.classifier_dropout,
        initializer_range=c.init_std, pad_token_id=c.pad_token_id, bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id, **labels_to_hf(c),
    )


FORMAT = HFFormat(
    model_type="gpt2", base_prefix="transformer.", backbone=BACKBONE, heads=HEADS,
    architectures={"GPT2LMHeadModel": "causal-lm", "GPT2ForSequenceClassification": "sequence-classification",
                   "GPT2ForTokenClassification": "token-classification", "GPT2Model": "embedding"},
    to_config=to_config, from_config=from_config, tokenizer="byte-bpe", tied_copies=("lm_head.weight",),
    ignore=(r"h\.\d+\.attn\.(masked_)?bias",),
    unsupported={"GPT2DoubleHeadsModel": "its multiple-choice head has no lmforge counterpart"},
)
