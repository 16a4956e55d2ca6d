"""`lmforge convert`: Hugging Face -> lmforge -> Hugging Face through the command line, and its errors."""

from __future__ import annotations

import json

import pytest
import torch

import lmforge
from lmforge.cli import main

transformers = pytest.importorskip("transformers")


def test_convert_both_ways_keeps_the_logits(tmp_path, capsys):
    config = transformers.BertConfig(vocab_size=60, hidden_size=20, num_attention_heads=5, num_hidden_layers=2,
                                     intermediate_size=28, max_position_embeddings=24)
    reference = transformers.BertForMaskedLM(config).eval()
    reference.save_pretrained(tmp_path / "hf")

    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    assert "masked-lm" in capsys.readouterr().out
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["format_version"] == 1
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "back"), "--to", "hf"]) == 0

    ids = torch.randint(1, 60, (2, 7))
    reloaded = transformers.BertForMaskedLM.from_pretrained(tmp_path / "back").eval()
    ours = lmforge.load(tmp_path / "ours").eval()
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        assert (reloaded(input_ids=ids).logits - expected).abs().max() <= 1e-4
        assert (ours(ids).logits - expected).abs().max() <= 1e-4


def test_convert_to_hf_refuses_an_architecture_no_format_expresses(tmp_path, capsys):
    lmforge.build_model("tiny-transformer").save(tmp_path / "ours")
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "hf"), "--to", "hf"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lmforge convert: error:") and "matches no Hugging Face format" in error
    assert "positions='sinusoidal'" in error and "\n" not in error.strip()
    assert not (tmp_path / "hf").exists()


def test_convert_names_an_unsupported_model_type(tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "mamba", "architectures": ["MambaForCausalLM"]}))
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "out")]) == 2
    assert "model_type 'mamba' is not supported" in capsys.readouterr().err


def test_convert_to_hf_says_how_a_small_budget_encoder_could_export(tmp_path, capsys):
    """A pre-LN encoder (the small-budget pretraining recipe) fits no BERT-family format: the error names only
    the encoder formats that have its head, and says to pretrain with --recipe standard."""
    config = lmforge.presets.get("tiny-bert").replace(norm_placement="pre", final_norm=True)
    lmforge.build_model(config).save(tmp_path / "ours")
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "hf"), "--to", "hf"]) == 2
    error = capsys.readouterr().err.strip()
    assert "bert:" in error and "gpt2" not in error and "--recipe standard" in error and "\n" not in error
    assert not (tmp_path / "hf").exists()
