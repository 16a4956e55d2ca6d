"""Checkpoint folders: bitwise round trips, atomic writes, and clear errors for damaged files."""

import json
import os

import pytest
import torch
from tokenizers import Tokenizer as Backend
from tokenizers.models import WordLevel

import lmforge
from lmforge import build_model, presets
from lmforge.checkpoint.atomic import atomic_folder
from lmforge.errors import CheckpointError
from lmforge.tokenizer import Tokenizer


@pytest.mark.parametrize("name, task", [("tiny-gpt2", "causal-lm"), ("tiny-bert", "sequence-classification"),
                                        ("tiny-bart", "seq2seq-lm"), ("tiny-t5-v1_1", "seq2seq-lm")])
def test_round_trip_is_bitwise_identical(tmp_path, name, task):
    model = build_model(presets.get(name).replace(num_labels=2, id2label={0: "neg", 1: "pos"}), task)
    model.save(tmp_path / "ckpt")
    loaded = lmforge.load(tmp_path / "ckpt")
    assert loaded.task == task and loaded.config == model.config
    original, again = model.state_dict(), loaded.state_dict()
    assert original.keys() == again.keys()
    for key in original:
        assert torch.equal(original[key], again[key]), key
    assert (tmp_path / "ckpt" / "README.md").read_text().startswith("---")
    assert not any(module.training for module in loaded.modules())  # loaded for inference: dropout off


def test_tokenizer_travels_with_the_model(tmp_path):
    backend = Backend(WordLevel({"[PAD]": 0, "[UNK]": 1, "hello": 2, "world": 3}, unk_token="[UNK]"))
    model = build_model("tiny-bert")
    model.tokenizer = Tokenizer(backend, {"pad": "[PAD]", "unk": "[UNK]"})
    model.save(tmp_path / "ckpt")
    loaded = lmforge.load(tmp_path / "ckpt")
    assert loaded.tokenizer.pad_id == 0 and loaded.tokenizer.token_to_id("world") == 3


def test_overwriting_a_checkpoint_replaces_it(tmp_path):
    build_model("tiny-gpt2").save(tmp_path / "ckpt")
    second = build_model("tiny-gpt2")
    second.save(tmp_path / "ckpt")
    assert torch.equal(lmforge.load(tmp_path / "ckpt").embed.weight, second.embed.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary folders left


def test_refuses_to_overwrite_a_folder_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="not an lmforge checkpoint"):
        build_model("tiny-gpt2").save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_interrupted_save_leaves_the_old_checkpoint(tmp_path):
    build_model("tiny-gpt2").save(tmp_path / "ckpt")
    before = (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(tmp_path / "ckpt") as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            raise KeyboardInterrupt
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_tampered_weights_are_detected(tmp_path):
    build_model("tiny-gpt2").save(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        lmforge.load(tmp_path / "ckpt")


def test_truncated_weights_are_detected(tmp_path):
    build_model("tiny-gpt2").save(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: os.path.getsize(weights) // 2])
    with pytest.raises(CheckpointError, match="SHA-256"):
        lmforge.load(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        lmforge.load(tmp_path / "ckpt", verify=False)


def test_config_that_does_not_fit_the_weights_names_the_keys(tmp_path):
    build_model("tiny-gpt2").save(tmp_path / "ckpt")
    config_path = tmp_path / "ckpt" / "config.json"
    meta = json.loads(config_path.read_text())
    meta["model"]["n_layers"] = 3
    meta["model"]["d_ff"] = 128
    config_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as error:
        lmforge.load(tmp_path / "ckpt", verify=False)
    message = str(error.value)
    assert "missing keys: decoder.blocks.2." in message
    assert "shape mismatches: decoder.blocks.0.mlp.up.weight (256, 64) != (128, 64)" in message


def test_missing_and_broken_folders(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        lmforge.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        lmforge.load(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        lmforge.load(tmp_path / "bad")
    build_model("tiny-gpt2").save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        lmforge.load(tmp_path / "ckpt")


def test_no_pickle_is_read(tmp_path):
    build_model("tiny-gpt2").save(tmp_path / "ckpt")
    assert not list((tmp_path / "ckpt").glob("*.bin")) and not list((tmp_path / "ckpt").glob("*.pt"))
