"""The published presets have exactly the published parameter counts (Hugging Face's AutoModel counts)."""

import pytest

from lmforge import build_model, presets

PUBLISHED = {
    "gpt2": 124_439_808,
    "bert-base-uncased": 109_482_240,
    "distilbert-base-uncased": 66_362_880,
    "roberta-base": 124_645_632,
    "bart-base": 139_420_416,
    "t5-small": 60_506_624,
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_parameter_count(name):
    model = build_model(presets.get(name))
    assert model.num_parameters(backbone_only=True) == PUBLISHED[name]


def test_t5_v1_1_has_untied_head():
    model = build_model("t5-v1_1-small")
    # google/t5-v1_1-small: 76,961,152 parameters with its own LM head
    assert model.num_parameters() == 76_961_152


# modern decoders: (preset, published count of the causal LM, the Hugging Face model type it exports to)
DECODERS = {
    "smollm2-135m": (134_515_008, "llama"),
    "qwen2.5-0.5b": (494_032_768, "qwen2"),
    "qwen3-0.6b": (596_049_920, "qwen3"),
    "tinyllama-1.1b": (1_100_048_384, "llama"),  # untied: its own LM head is part of the count
    "llama-3.2-1b": (1_235_814_400, "llama"),
}


@pytest.mark.parametrize("name", list(DECODERS))
def test_modern_decoder_parameter_counts(name):
    """Exact counts, and Hugging Face's own class built from the exported config.json has the same count
    (both on the meta device: no memory for the weights)."""
    import torch

    transformers = pytest.importorskip("transformers")
    from lmforge.checkpoint.hf.export import match_format

    count, model_type = DECODERS[name]
    with torch.device("meta"):
        model = build_model(presets.get(name))
    assert model.num_parameters() == count
    fmt, _, hf_config = match_format(model, model_type)
    config = transformers.AutoConfig.for_model(**hf_config)
    with torch.device("meta"):
        reference = getattr(transformers, hf_config["architectures"][0])(config)
    assert sum(p.numel() for p in reference.parameters()) == count
