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
