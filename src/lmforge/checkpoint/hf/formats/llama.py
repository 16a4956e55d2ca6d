"""Llama, Mistral, Qwen2 and Qwen3: pre-RMSNorm decoders with rotary positions, grouped-query attention
and a SwiGLU feed-forward (gate_proj, up_proj, down_proj). They share one table of renaming rules and
differ only in config fields: Qwen2's q/k/v biases, Qwen3's per-head q/k norms, Mistral's and Qwen's
sliding windows. Both rotary config styles are read: transformers 5's `rope_parameters` and the older
`rope_theta` + `rope_scaling`."""

from __future__ import annotations

from typing import Any

from ....config import ROPE_SCALINGS, ModelConfig
from ....errors import CheckpointError
from ..rules import linear, tensor
from ..spec import HF_ACTIVATION, ConfigReader, HFFormat, labels_to_hf

B, H = "decoder.blocks.{i}", "layers.{i}"
BACKBONE = (
    tensor("embed.weight", "embed_tokens.weight"),
    linear(f"{B}.self_attn.q", f"{H}.self_attn.q_proj"),
    linear(f"{B}.self_attn.kv", (f"{H}.self_attn.k_proj", f"{H}.self_attn.v_proj")),
    linear(f"{B}.self_attn.o", f"{H}.self_attn.o_proj"),
    linear(f"{B}.self_attn.q_norm", f"{H}.self_attn.q_norm", when="qk_norm"),
    linear(f"{B}.self_attn.k_norm", f"{H}.self_attn.k_norm", when="qk_norm"),
    linear(f"{B}.attn_norm", f"{H}.input_layernorm"),
    linear(f"{B}.mlp.gate", f"{H}.mlp.gate_proj"),
    linear(f"{B}.mlp.up", f"{H}.mlp.up_proj"),
    linear(f"{B}.mlp.down", f"{H}.mlp.down_proj"),
    linear(f"{B}.mlp_norm", f"{H}.post_attention_layernorm"),
    linear("decoder.final_norm", "norm"),
)
HEADS = {
    "causal-lm": (tensor("head.weight", "lm_head.weight"),),
    "sequence-classification": (linear("head.out", "score"),),
    "token-classification": (linear("head.out", "score"),),
}
# rope type -> (our field, Hugging Face key, default) of its parameters
ROPE_KEYS = {
    "linear": (("rope_factor", "factor", 1.0),),
    "llama3": (("rope_factor", "factor", 1.0), ("rope_low_freq_factor", "low_freq_factor", 1.0),
               ("rope_high_freq_factor", "high_freq_factor", 4.0),
               ("rope_original_max_positions", "original_max_position_embeddings", None)),
    "yarn": (("rope_factor", "factor", 1.0), ("rope_original_max_positions", "original_max_position_embeddings", None),
             ("rope_beta_fast", "beta_fast", 32.0), ("rope_beta_slow", "beta_slow", 1.0),
             ("rope_attention_factor", "attention_factor", None), ("rope_truncate", "truncate", True)),
}
HF_ROPE_TYPES = {"default": "none", "linear": "linear", "llama3": "llama3", "yarn": "yarn"}


def rotary_fields(hf: ConfigReader) -> dict[str, Any]:
    """Our rotary fields from either `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling`."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in HF_ROPE_TYPES:
        raise CheckpointError(f"{hf.path}: rope scaling type {kind!r} is not supported; known types: "
                              f"{', '.join(HF_ROPE_TYPES)} (lmforge: {', '.join(ROPE_SCALINGS)})")
    if kind == "yarn" and (params.get("mscale") or params.get("mscale_all_dim")):
        raise CheckpointError(f"{hf.path}: yarn rope scaling with mscale/mscale_all_dim is not supported; "
                              "give attention_factor instead")
    partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise CheckpointError(f"{hf.path}: partial_rotary_factor={partial} is not used by this model type "
                              "in transformers; remove it or set it to 1.0")
    fields = {"rotary_theta": float(params.get("rope_theta", hf.get("rope_theta", 10000.0))),
              "rope_scaling": HF_ROPE_TYPES[kind]}
    for ours, key, default in ROPE_KEYS.get(kind, ()):
        value = params.get(key)
        fields[ours] = default if value is None else value
    if kind == "yarn" and params.get("factor") is None:  # DeepSeek style: the ratio of the two lengths
        fields["rope_factor"] = hf.need("max_position_embeddings") / hf.need("original_max_position_embeddings")
    return fields


def rotary_to_hf(c: ModelConfig) -> dict[str, Any]:
    kind = next(hf for hf, ours in HF_ROPE_TYPES.items() if ours == c.rope_scaling)
    params: dict[str, Any] = {"rope_type": kind, "rope_theta": c.rotary_theta}
    for ours, key, _ in ROPE_KEYS.get(kind, ()):
        if getattr(c, ours) is not None:
            params[key] = getattr(c, ours)
    return {"rope_parameters": params}


def window_fields(hf: ConfigReader, n_layers: int, switch: str | None) -> dict[str, Any]:
    """sliding_window and sliding_layers: `switch` names the config's on/off flag (Qwen's
    use_sliding_window); without one (Mistral) a sliding_window applies to every layer."""
    window = hf.get("sliding_window")
    if switch is not None and not hf.get(switch, False):
        window = None
    if window is None:
        return {}
    types = hf.get("layer_types")
    if types is None:
        first = hf.get("max_window_layers", 0) if switch is not None else 0
        types = ["sliding_attention" if i >= first else "full_attention" for i in range(n_layers)]
    layers = [i for i, kind in enumerate(types) if kind == "sliding_attention"]
    if not layers:
        return {}
    return {"sliding_window": window, "sliding_layers": None if len(layers) == n_layers else layers}


def window_to_hf(c: ModelConfig, switch: str | None) -> dict[str, Any]:
    if switch is None:  # Mistral: null or a window for every layer
        return {"sliding_window": c.sliding_window}
    types = ["sliding_attention" if c.window_of(i) is not None else "full_attention" for i in range(c.n_layers)]
    return {switch: c.sliding_window is not None, "sliding_window": c.sliding_window, "layer_types": types,
            "max_window_layers": types.index("sliding_attention") if "sliding_attention" in types else c.n_layers}


def make_format(model_type: str, prefix: str, biases: dict[str, Any], qk_norm: bool, window_switch: str | None,
                sliding: bool = True) -> HFFormat:
    """The format of one member of the family. biases: our bias fields -> a Hugging Face config key
    holding the switch, or a fixed bool; `sliding`: whether the model type has sliding windows at all."""

    def to_config(hf: ConfigReader, names: set[str], task: str) -> ModelConfig:
        hf.refuse("pretraining_tp", (1, None), "tensor-parallel slicing of the linears is not implemented")
        n_layers = hf.need("num_hidden_layers")
        bias = {ours: (hf.get(source, False) if isinstance(source, str) else source) for ours, source in biases.items()}
        return ModelConfig(
            family="decoder", vocab_size=hf.need("vocab_size"), d_model=hf.need("hidden_size"),
            n_heads=hf.need("num_attention_heads"), n_kv_heads=hf.get("num_key_value_heads"),
            n_layers=n_layers, d_ff=hf.need("intermediate_size"), d_head=hf.get("head_dim"),
            max_positions=hf.get("max_position_embeddings", 2048), positions="rotary", **rotary_fields(hf),
            **(window_fields(hf, n_layers, window_switch) if sliding else {}),
            norm="rms", norm_eps=hf.get("rms_norm_eps", 1e-6), norm_placement="pre", final_norm=True,
            activation=hf.activation("hidden_act", "silu"), gated_mlp=True, bias=False, **bias, qk_norm=qk_norm,
            tie_embeddings=hf.get("tie_word_embeddings", False), classifier_pool="last", classifier_bias=False,
            dropout=0.0, attention_dropout=hf.get("attention_dropout", 0.0),
            classifier_dropout=hf.get("classifier_dropout"), init_std=hf.get("initializer_range", 0.02),
            pad_token_id=hf.get("pad_token_id"), bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"), **hf.labels(task),
        )

    def from_config(c: ModelConfig) -> dict:
        switches = {source: getattr(c, f"use_{ours}") for ours, source in biases.items() if isinstance(source, str)}
        return dict(
            vocab_size=c.vocab_size, hidden_size=c.d_model, num_attention_heads=c.n_heads,
            num_key_value_heads=c.kv_heads, num_hidden_layers=c.n_layers, intermediate_size=c.d_ff,
            head_dim=c.head_dim, max_position_embeddings=c.max_positions, **rotary_to_hf(c),
            **(window_to_hf(c, window_switch) if sliding else {}), rms_norm_eps=c.norm_eps,
            hidden_act=HF_ACTIVATION[c.activation], **switches, tie_word_embeddings=c.tie_embeddings,
            attention_dropout=c.attention_dropout, classifier_dropout=c.classifier_dropout,
            initializer_range=c.init_std, pad_token_id=c.pad_token_id, bos_token_id=c.bos_token_id,
            eos_token_id=c.eos_token_id, **labels_to_hf(c),
        )

    return HFFormat(
        model_type=model_type, base_prefix="model.", backbone=BACKBONE, heads=HEADS,
        architectures={f"{prefix}ForCausalLM": "causal-lm", f"{prefix}ForSequenceClassification": "sequence-classification",
                       f"{prefix}ForTokenClassification": "token-classification", f"{prefix}Model": "embedding"},
        to_config=to_config, from_config=from_config, tokenizer="byte-bpe", tied_copies=("lm_head.weight",),
        ignore=(r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq", r"rotary_emb\.inv_freq"),
        unsupported={f"{prefix}ForQuestionAnswering": "its question-answering head has no lmforge counterpart"},
    )


LLAMA = make_format("llama", "Llama", {"qkv_bias": "attention_bias", "out_bias": "attention_bias",
                                       "mlp_bias": "mlp_bias"}, qk_norm=False, window_switch=None, sliding=False)
MISTRAL = make_format("mistral", "Mistral", {"qkv_bias": False, "out_bias": False, "mlp_bias": False},
                      qk_norm=False, window_switch=None)
QWEN2 = make_format("qwen2", "Qwen2", {"qkv_bias": True, "out_bias": False, "mlp_bias": False},
                    qk_norm=False, window_switch="use_sliding_window")
QWEN3 = make_format("qwen3", "Qwen3", {"qkv_bias": "attention_bias", "out_bias": "attention_bias",
                                       "mlp_bias": False}, qk_norm=True, window_switch="use_sliding_window")
