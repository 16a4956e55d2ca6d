"""Export of lmforge-born models (presets, every head) to Hugging Face: transformers loads them and
gives the same outputs; architectures no format expresses are refused with the reason."""

from __future__ import annotations

import json

import pytest
import torch

import lmforge
from lmforge.checkpoint.hf import export_hf
from lmforge.errors import CheckpointError

transformers = pytest.importorskip("transformers")

# (preset, task, transformers class to load the export with)
CASES = [
    ("tiny-gpt2", "causal-lm", "GPT2LMHeadModel"),
    ("tiny-gpt2", "token-classification", "GPT2ForTokenClassification"),
    ("tiny-bert", "masked-lm", "BertForMaskedLM"),
    ("tiny-bert", "sequence-classification", "BertForSequenceClassification"),
    ("tiny-distilbert", "sequence-classification", "DistilBertForSequenceClassification"),
    ("tiny-roberta", "masked-lm", "RobertaForMaskedLM"),
    ("tiny-bart", "seq2seq-lm", "BartForConditionalGeneration"),
    ("tiny-t5", "seq2seq-lm", "T5ForConditionalGeneration"),
]


@pytest.mark.parametrize("preset,task,class_name", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_preset_exports_to_an_equivalent_hf_model(preset, task, class_name, tmp_path):
    model = lmforge.build_model(preset, task).eval()
    export_hf(model, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == [class_name]
    theirs = getattr(transformers, class_name).from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(5, model.config.vocab_size, (2, 8))
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            target = torch.randint(5, model.config.vocab_size, (2, 5))
            ours = model(ids, decoder_input_ids=target).logits
            expected = theirs(input_ids=ids, decoder_input_ids=target).logits
        else:
            ours, expected = model(ids).logits, theirs(input_ids=ids).logits
    assert (ours - expected).abs().max().item() <= 1e-4
    assert lmforge.load(tmp_path / "hf").num_parameters() == model.num_parameters()


def test_untied_gpt2_head_round_trips(tmp_path):
    config = lmforge.presets.get("tiny-gpt2").replace(tie_embeddings=False)
    model = lmforge.build_model(config).eval()
    export_hf(model, tmp_path / "hf")
    again = lmforge.load(tmp_path / "hf").eval()
    ids = torch.randint(0, 512, (1, 6))
    assert torch.equal(again.head.weight, model.head.weight)
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, model(ids).logits)


def test_an_architecture_no_format_expresses_is_refused_with_reasons(tmp_path):
    config = lmforge.presets.get("tiny-gpt2").replace(norm="rms")  # no GPT-2 has RMSNorm
    with pytest.raises(CheckpointError, match=r"gpt2: norm='rms' \(the format gives 'layer'\)"):
        export_hf(lmforge.build_model(config), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_export_refuses_to_overwrite_an_unrelated_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        export_hf(lmforge.build_model("tiny-gpt2"), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
