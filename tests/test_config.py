import json

import pytest

from lmforge import ModelConfig, presets
from lmforge.errors import ConfigError


def test_json_round_trip_every_preset():
    for name in presets.names():
        config = presets.get(name)
        again = ModelConfig.from_json(config.to_json())
        assert again == config, name


def test_id2label_survives_json():
    config = presets.get("tiny-bert").replace(num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"})
    again = ModelConfig.from_json(config.to_json())
    assert again.id2label == {0: "neg", 1: "neu", 2: "pos"}
    assert again.label2id == {"neg": 0, "neu": 1, "pos": 2}


@pytest.mark.parametrize("changes, words", [
    (dict(d_model=100, n_heads=3), ["d_model=100", "n_heads=3", "divisible"]),
    (dict(family="rnn"), ["family", "rnn"]),
    (dict(activation="swish"), ["activation", "swish"]),
    (dict(dropout=1.5), ["dropout"]),
    (dict(n_layers=0), ["n_layers"]),
    (dict(pad_token_id=10_000), ["pad_token_id", "vocabulary"]),
    (dict(classifier_pool="pooler", pooler=False), ["pooler"]),
    (dict(num_labels=2, id2label={0: "a"}), ["id2label"]),
])
def test_validate_names_the_problem(changes, words):
    with pytest.raises(ConfigError) as error:
        presets.get("tiny-bert").replace(**changes)
    for word in words:
        assert word in str(error.value)


def test_unknown_field_is_listed():
    data = presets.get("tiny-gpt2").to_dict()
    data["n_head"] = 4
    with pytest.raises(ConfigError, match="n_head"):
        ModelConfig.from_dict(data)


def test_bad_json():
    with pytest.raises(ConfigError, match="JSON"):
        ModelConfig.from_json("{not json")


def test_from_file_yaml_and_json(tmp_path):
    config = presets.get("tiny-t5")
    (tmp_path / "a.json").write_text(config.to_json())
    import yaml

    (tmp_path / "a.yaml").write_text(yaml.safe_dump(config.to_dict()))
    assert ModelConfig.from_file(tmp_path / "a.json") == config
    assert ModelConfig.from_file(tmp_path / "a.yaml") == config
    assert json.loads(config.to_json())["family"] == "encoder-decoder"


def test_unknown_preset_suggests():
    with pytest.raises(ConfigError, match="unknown preset 'gpt3'.*available presets"):
        presets.get("gpt3")
    with pytest.raises(ConfigError, match="did you mean"):
        presets.get("bert")
