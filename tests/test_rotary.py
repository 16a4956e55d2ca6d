"""Rotary embeddings against transformers' implementations (test oracle): the cos/sin tables of every
scaling lmforge supports, and the half-split rotation itself; config validation of the new fields."""

from __future__ import annotations

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.errors import ConfigError
from lmforge.nn.rotary import RotaryEmbedding, rotate

transformers = pytest.importorskip("transformers")
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb  # noqa: E402

SCALINGS = [  # (our fields, HF rope_parameters)
    ({}, {"rope_type": "default", "rope_theta": 10000.0}),
    ({"rotary_theta": 500000.0, "rope_scaling": "linear", "rope_factor": 3.0},
     {"rope_type": "linear", "rope_theta": 500000.0, "factor": 3.0}),
    ({"rotary_theta": 500000.0, "rope_scaling": "llama3", "rope_factor": 8.0, "rope_low_freq_factor": 1.0,
      "rope_high_freq_factor": 4.0, "rope_original_max_positions": 64},
     {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    ({"rotary_theta": 1e6, "rope_scaling": "yarn", "rope_factor": 4.0, "rope_original_max_positions": 32},
     {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0, "original_max_position_embeddings": 32}),
    ({"rope_scaling": "yarn", "rope_factor": 2.0, "rope_beta_fast": 16.0, "rope_beta_slow": 2.0,
      "rope_attention_factor": 1.3, "rope_truncate": False},
     {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0, "beta_fast": 16.0, "beta_slow": 2.0,
      "attention_factor": 1.3, "truncate": False, "original_max_position_embeddings": 128}),
    ({"rotary_fraction": 0.5}, {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}),
]


@pytest.mark.parametrize("ours, theirs", SCALINGS, ids=lambda v: str(v)[:40])
def test_tables_match_transformers(ours, theirs):
    config = ModelConfig(d_model=96, n_heads=4, d_head=24, max_positions=128, positions="rotary", **ours).validate()
    hf_config = transformers.LlamaConfig(hidden_size=96, num_attention_heads=4, head_dim=24,
                                         max_position_embeddings=128, rope_parameters=dict(theirs))
    positions = torch.tensor([[0, 1, 2, 5, 17, 63, 127], [3, 3, 4, 90, 100, 101, 102]])
    cos, sin = RotaryEmbedding(config).tables(positions, torch.float32)  # (B, 1, T, rotary_dim)
    if "partial_rotary_factor" in theirs:  # Llama's rotary ignores it; GPT-NeoX's honours it
        from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding

        hf_config = transformers.GPTNeoXConfig(hidden_size=96, num_attention_heads=4, max_position_embeddings=128,
                                               rope_parameters=dict(theirs))
        oracle = GPTNeoXRotaryEmbedding(hf_config)
    else:
        oracle = LlamaRotaryEmbedding(hf_config)
    hf_cos, hf_sin = oracle(torch.zeros(1, dtype=torch.float32), positions)
    assert cos.shape[-1] == config.rotary_dim == hf_cos.shape[-1]
    torch.testing.assert_close(cos[:, 0], hf_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin[:, 0], hf_sin, rtol=0, atol=1e-6)


def test_rotation_matches_transformers_and_partial_keeps_the_rest():
    config = ModelConfig(d_model=64, n_heads=4, positions="rotary").validate()
    q, k = torch.randn(2, 4, 5, 16), torch.randn(2, 4, 5, 16)
    positions = torch.arange(5)[None].expand(2, 5)
    cos, sin = RotaryEmbedding(config).tables(positions, torch.float32)
    hf_q, hf_k = apply_rotary_pos_emb(q, k, cos[:, 0], sin[:, 0])
    ours_q, ours_k = RotaryEmbedding(config)(q, k, positions)
    torch.testing.assert_close(ours_q, hf_q)
    torch.testing.assert_close(ours_k, hf_k)
    half = rotate(q, cos[..., :8], sin[..., :8])  # a partial rotation: 8 of 16 dimensions
    torch.testing.assert_close(half[..., 8:], q[..., 8:])
    hf_half, _ = apply_rotary_pos_emb(q[..., :8], k[..., :8], cos[:, 0, :, :8], sin[:, 0, :, :8])
    torch.testing.assert_close(half[..., :8], hf_half)


def test_tables_stay_float32_in_bf16_models():
    rotary = RotaryEmbedding(ModelConfig(d_model=64, n_heads=4, positions="rotary").validate()).to(torch.bfloat16)
    assert rotary.inv_freq.dtype == torch.float32
    cos, _ = rotary.tables(torch.arange(3)[None], torch.bfloat16)
    assert cos.dtype == torch.bfloat16


@pytest.mark.parametrize("fields, message", [
    (dict(n_heads=6, n_kv_heads=4), "n_heads=6 is not divisible by n_kv_heads=4"),
    (dict(rope_scaling="dynamic"), "rope_scaling='dynamic' is not a known rope scaling type; known types: "
                                   "none, linear, llama3, yarn"),
    (dict(positions="rotary", rotary_fraction=0.3, d_head=10), "must be an even number"),
    (dict(sliding_window=0), "sliding_window must be a positive integer"),
    (dict(sliding_layers=[12]), "sliding_layers must list layer indexes"),
    (dict(eos_token_id=[2, 99999]), "eos_token_id=\\[2, 99999\\] is outside the vocabulary"),
])
def test_bad_fields_are_named(fields, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**fields).validate()


def test_defaults_follow_bias_and_heads():
    config = ModelConfig(bias=False, qkv_bias=True, n_heads=8, n_kv_heads=2, d_model=64).validate()
    assert (config.use_qkv_bias, config.use_out_bias, config.use_mlp_bias) == (True, False, False)
    assert config.kv_heads == 2 and ModelConfig().kv_heads == 12
    assert ModelConfig(sliding_window=8, sliding_layers=[1]).window_of(0) is None
    assert ModelConfig(sliding_window=8).window_of(3) == 8
