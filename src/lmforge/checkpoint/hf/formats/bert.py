"""BERT and RoBERTa: one backbone table (separate q, k, v), post-LayerNorm; RoBERTa offsets positions."""

from __future__ import annotations

from ....config import ModelConfig
from ..rules import linear, tensor
from ..spec import HF_ACTIVATION, ConfigReader, HFFormat, labels_to_hf

L = "encoder.layer.{i}"
B = "encoder.blocks.{i}"
BACKBONE = (
    tensor("embed.weight", "embeddings.word_embeddings.weight"),
    tensor("encoder.positions.weight", "embeddings.position_embeddings.weight"),
    tensor("encoder.token_types.weight", "embeddings.token_type_embeddings.weight"),
    linear("encoder.embed_norm", "embeddings.LayerNorm"),
    linear(f"{B}.self_attn.q", f"{L}.attention.self.query"),
    linear(f"{B}.self_attn.kv", (f"{L}.attention.self.key", f"{L}.attention.self.value")),
    linear(f"{B}.self_attn.o", f"{L}.attention.output.dense"),
    linear(f"{B}.attn_norm", f"{L}.attention.output.LayerNorm"),
    linear(f"{B}.mlp.up", f"{L}.intermediate.dense"),
    linear(f"{B}.mlp.down", f"{L}.output.dense"),
    linear(f"{B}.mlp_norm", f"{L}.output.LayerNorm"),
    linear("pooler.dense", "pooler.dense"),
)
IGNORE = (r"embeddings\.position_ids", r"embeddings\.token_type_ids")


def mlm_head(prefix: str, dense: str, norm: str) -> tuple:
    """BERT's cls.predictions.* and RoBERTa's lm_head.*: transform, norm, own-or-tied decoder, bias."""
    return (linear("head.transform", f"{prefix}.{dense}"), linear("head.norm", f"{prefix}.{norm}"),
            tensor("head.bias", f"{prefix}.bias|{prefix}.decoder.bias"),
            tensor("head.weight", f"{prefix}.decoder.weight"))


BERT_HEADS = {
    "masked-lm": mlm_head("cls.predictions", "transform.dense", "transform.LayerNorm"),
    "sequence-classification": (linear("head.out", "classifier"),),
    "token-classification": (linear("head.out", "classifier"),),
}
ROBERTA_HEADS = {
    "masked-lm": mlm_head("lm_head", "dense", "layer_norm"),
    "sequence-classification": (linear("head.dense", "classifier.dense"), linear("head.out", "classifier.out_proj")),
    "token-classification": (linear("head.out", "classifier"),),
}


def config_for(offset: int, classifier_hidden_act: str | None):
    """to_config for BERT (offset 0, classifier on the pooler) or RoBERTa (positions after the padding
    index, a tanh dense on the first token)."""

    def to_config(hf: ConfigReader, names: set[str], task: str) -> ModelConfig:
        hf.refuse("position_embedding_type", ("absolute",), "relative-key position embeddings are not implemented")
        hf.refuse("is_decoder", (False,), "a BERT decoder is not an lmforge architecture")
        hf.refuse("add_cross_attention", (False,), "a BERT decoder is not an lmforge architecture")
        pad = hf.get("pad_token_id", 1 if offset else 0)
        position_offset = pad + 1 if offset else 0
        # BertForSequenceClassification always has a pooler; other heads keep one only if the file has it
        pooler = "pooler.dense.weight" in names or (task == "sequence-classification" and not offset)
        return ModelConfig(
            family="encoder", vocab_size=hf.need("vocab_size"), d_model=hf.need("hidden_size"),
            n_heads=hf.need("num_attention_heads"), n_layers=hf.need("num_hidden_layers"),
            d_ff=hf.need("intermediate_size"),
            max_positions=hf.need("max_position_embeddings") - position_offset, positions="learned",
            position_offset=position_offset, type_vocab_size=hf.get("type_vocab_size", 2), norm="layer",
            norm_eps=hf.get("layer_norm_eps", 1e-12), norm_placement="post", embedding_norm=True,
            final_norm=False, activation=hf.activation("hidden_act", "gelu"),
            tie_embeddings=hf.get("tie_word_embeddings", True), mlm_transform=True, pooler=pooler,
            classifier_pool="pooler" if (pooler and not offset) else "first",
            classifier_hidden_act=classifier_hidden_act, dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            classifier_dropout=hf.get("classifier_dropout"), init_std=hf.get("initializer_range", 0.02),
            pad_token_id=pad, bos_token_id=hf.get("bos_token_id"), eos_token_id=hf.get("eos_token_id"),
            **hf.labels(task),
        )

    return to_config


def from_config(c: ModelConfig) -> dict:
    return dict(
        vocab_size=c.vocab_size, hidden_size=c.d_model, num_attention_heads=c.n_heads,
        num_hidden_layers=c.n_layers, intermediate_size=c.d_ff, max_position_embeddings=c.max_positions
        + c.position_offset, type_vocab_size=c.type_vocab_size, layer_norm_eps=c.norm_eps,
        hidden_act=HF_ACTIVATION[c.activation], tie_word_embeddings=c.tie_embeddings,
        hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.attention_dropout,
        classifier_dropout=c.classifier_dropout, initializer_range=c.init_std, pad_token_id=c.pad_token_id,
        bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, position_embedding_type="absolute",
        **labels_to_hf(c),
    )


def architectures(name: str) -> dict[str, str]:
    return {f"{name}ForMaskedLM": "masked-lm", f"{name}ForSequenceClassification": "sequence-classification",
            f"{name}ForTokenClassification": "token-classification", f"{name}Model": "embedding"}


BERT = HFFormat(
    model_type="bert", base_prefix="bert.", backbone=BACKBONE, heads=BERT_HEADS,
    architectures=architectures("Bert"), to_config=config_for(0, None), from_config=from_config,
    tokenizer="wordpiece", tied_copies=("cls.predictions.decoder.weight",), ignore=IGNORE,
)
ROBERTA = HFFormat(
    model_type="roberta", base_prefix="roberta.", backbone=BACKBONE, heads=ROBERTA_HEADS,
    architectures=architectures("Roberta"), to_config=config_for(1, "tanh"), from_config=from_config,
    tokenizer="byte-bpe", tied_copies=("lm_head.decoder.weight",), ignore=IGNORE,
)
