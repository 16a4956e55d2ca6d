"""DistilBERT: BERT without token types or pooler, its own layer names, a ReLU pre-classifier.

Sinusoidal DistilBERT checkpoints store their fixed table as a weight, so they load as learned positions
(numerically identical) and export with `sinusoidal_pos_embds` false."""

from __future__ import annotations

from ....config import ModelConfig
from ..rules import linear, tensor
from ..spec import HF_ACTIVATION, ConfigReader, HFFormat, labels_to_hf

L = "transformer.layer.{i}"
B = "encoder.blocks.{i}"
BACKBONE = (
    tensor("embed.weight", "embeddings.word_embeddings.weight"),
    tensor("encoder.positions.weight", "embeddings.position_embeddings.weight"),
    linear("encoder.embed_norm", "embeddings.LayerNorm"),
    linear(f"{B}.self_attn.q", f"{L}.attention.q_lin"),
    linear(f"{B}.self_attn.kv", (f"{L}.attention.k_lin", f"{L}.attention.v_lin")),
    linear(f"{B}.self_attn.o", f"{L}.attention.out_lin"),
    linear(f"{B}.attn_norm", f"{L}.sa_layer_norm"),
    linear(f"{B}.mlp.up", f"{L}.ffn.lin1"),
    linear(f"{B}.mlp.down", f"{L}.ffn.lin2"),
    linear(f"{B}.mlp_norm", f"{L}.output_layer_norm"),
)
HEADS = {
    "masked-lm": (linear("head.transform", "vocab_transform"), linear("head.norm", "vocab_layer_norm"),
                  tensor("head.bias", "vocab_projector.bias"), tensor("head.weight", "vocab_projector.weight")),
    "sequence-classification": (linear("head.dense", "pre_classifier"), linear("head.out", "classifier")),
    "token-classification": (linear("head.out", "classifier"),),
}


def to_config(hf: ConfigReader, names: set[str], task: str) -> ModelConfig:
    return ModelConfig(
        family="encoder", vocab_size=hf.need("vocab_size"), d_model=hf.need("dim"), n_heads=hf.need("n_heads"),
        n_layers=hf.need("n_layers"), d_ff=hf.need("hidden_dim"), max_positions=hf.need("max_position_embeddings"),
        positions="learned", type_vocab_size=0, norm="layer", norm_eps=1e-12, norm_placement="post",
        embedding_norm=True, final_norm=False, activation=hf.activation("activation", "gelu"),
        tie_embeddings=hf.get("tie_word_embeddings", True), mlm_transform=True, pooler=False,
        classifier_pool="first", classifier_hidden_act="relu", dropout=hf.get("dropout", 0.1),
        attention_dropout=hf.get("attention_dropout", 0.1), classifier_dropout=hf.get("seq_classif_dropout", 0.2),
        init_std=hf.get("initializer_range", 0.02), pad_token_id=hf.get("pad_token_id", 0), **hf.labels(task),
    )


def from_config(c: ModelConfig) -> dict:
    return dict(
        vocab_size=c.vocab_size, dim=c.d_model, n_heads=c.n_heads, n_layers=c.n_layers, hidden_dim=c.d_ff,
        max_position_embeddings=c.max_positions, sinusoidal_pos_embds=False, activation=HF_ACTIVATION[c.activation],
        tie_word_embeddings=c.tie_embeddings, dropout=c.dropout, attention_dropout=c.attention_dropout,
        seq_classif_dropout=c.classifier_dropout, initializer_range=c.init_std, pad_token_id=c.pad_token_id,
        **labels_to_hf(c),
    )


FORMAT = HFFormat(
    model_type="distilbert", base_prefix="distilbert.", backbone=BACKBONE, heads=HEADS,
    architectures={"DistilBertForMaskedLM": "masked-lm",
                   "DistilBertForSequenceClassification": "sequence-classification",
                   "DistilBertForTokenClassification": "token-classification", "DistilBertModel": "embedding"},
    to_config=to_config, from_config=from_config, tokenizer="wordpiece", tied_copies=("vocab_projector.weight",),
    ignore=(r"embeddings\.position_ids",),
)
