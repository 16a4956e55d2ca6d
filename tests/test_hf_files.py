"""Hugging Face weight files (single, sharded, pickle) and bad input: each a clear CheckpointError
naming the file, the key and the reason; base models loaded into heads report the new weights."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

import lmforge
from lmforge.errors import CheckpointError

transformers = pytest.importorskip("transformers")


def tiny_bert(folder, cls="BertForMaskedLM", **kw):
    config = transformers.BertConfig(vocab_size=50, hidden_size=15, num_attention_heads=3, num_hidden_layers=2,
                                     intermediate_size=20, max_position_embeddings=16, **kw)
    model = getattr(transformers, cls)(config).eval()
    model.save_pretrained(folder)
    return model


def logits_equal(folder, reference):
    ids = torch.randint(1, 50, (2, 6))
    with torch.no_grad():
        return (lmforge.load(folder).eval()(ids).logits - reference(input_ids=ids).logits).abs().max() <= 1e-5


def test_sharded_safetensors_with_an_index(tmp_path):
    reference = tiny_bert(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in shards.items():
        save_file({k: state[k] for k in keys}, tmp_path / file)
    index = {"weight_map": {k: file for file, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert logits_equal(tmp_path, reference)

    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="names the shard model-00002-of-00002.safetensors, which is missing"):
        lmforge.load(tmp_path)


def test_pytorch_model_bin_is_read_with_weights_only(tmp_path):
    reference = tiny_bert(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    assert logits_equal(tmp_path, reference)


class Payload:  # an arbitrary object: weights_only loading must refuse it
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_that_is_not_plain_tensors_is_refused(tmp_path):
    tiny_bert(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with open(tmp_path / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"bert.embeddings.word_embeddings.weight": Payload()}, handle)
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin cannot be read safely with "
                                              r"torch.load\(weights_only=True\)"):
        lmforge.load(tmp_path)


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba", "architectures": ["MambaForCausalLM"]}))
    with pytest.raises(CheckpointError, match=r"config.json: model_type 'mamba' is not supported; lmforge converts "
                                              r"gpt2, bert, roberta, distilbert, bart, t5, llama, mistral, qwen2, qwen3"):
        lmforge.load(tmp_path)


def test_a_config_field_lmforge_cannot_honour(tmp_path):
    tiny_bert(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["position_embedding_type"] = "relative_key"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config.json: position_embedding_type='relative_key' cannot be "
                                              r"honoured by lmforge \(relative-key position embeddings"):
        lmforge.load(tmp_path)


def test_bart_sequence_classification_is_refused(tmp_path):
    config = transformers.BartConfig(vocab_size=40, d_model=12, encoder_attention_heads=3, decoder_attention_heads=3,
                                     encoder_layers=1, decoder_layers=1, encoder_ffn_dim=16, decoder_ffn_dim=16)
    transformers.BartForSequenceClassification(config).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="BartForSequenceClassification is not supported: lmforge "
                                              "encoder-decoders have only the seq2seq-lm and embedding tasks"):
        lmforge.load(tmp_path)


def rewrite_weights(folder, change):
    state = load_file(folder / "model.safetensors")
    change(state)
    save_file(state, folder / "model.safetensors")


def test_missing_backbone_weight_names_the_key(tmp_path):
    tiny_bert(tmp_path)
    rewrite_weights(tmp_path, lambda s: s.pop("bert.encoder.layer.1.attention.self.value.weight"))
    with pytest.raises(CheckpointError, match=r"lacks weights the model needs: "
                                              r"encoder.layer.1.attention.self.value.weight"):
        lmforge.load(tmp_path)


def test_extra_weight_names_the_file_and_key(tmp_path):
    tiny_bert(tmp_path)
    rewrite_weights(tmp_path, lambda s: s.update({"bert.encoder.layer.2.output.dense.weight": torch.zeros(15, 20)}))
    with pytest.raises(CheckpointError, match=r"model.safetensors holds weights that a bert masked-lm model does "
                                              r"not have: encoder.layer.2.output.dense.weight"):
        lmforge.load(tmp_path)


def test_shape_mismatch_names_file_key_and_shapes(tmp_path):
    tiny_bert(tmp_path)
    rewrite_weights(tmp_path, lambda s: s.update({"bert.encoder.layer.0.intermediate.dense.weight": torch.zeros(21, 15)}))
    with pytest.raises(CheckpointError, match=r"model.safetensors: shape mismatch: encoder.layer.0.intermediate."
                                              r"dense.weight \(21, 15\) cannot fill encoder.blocks.0.mlp.up.weight "
                                              r"\(20, 15\)"):
        lmforge.load(tmp_path)


def test_base_model_into_a_task_head_reports_new_weights(tmp_path):
    reference = tiny_bert(tmp_path, cls="BertModel")
    with pytest.warns(UserWarning, match=r"newly initialised sequence-classification weights .*head.out.weight"):
        model = lmforge.load(tmp_path, task="sequence-classification")
    assert torch.equal(model.pooler.dense.weight, reference.pooler.dense.weight)  # the backbone's pooler is kept
    assert torch.equal(model.embed.weight, reference.embeddings.word_embeddings.weight)


def test_another_heads_weights_are_reported_not_used(tmp_path):
    tiny_bert(tmp_path, cls="BertForMaskedLM")
    with pytest.warns(UserWarning, match=r"not used by the embedding model: cls.predictions"):
        model = lmforge.load(tmp_path, task="embedding")
    assert model.task == "embedding"


def test_tied_copy_that_differs_is_refused(tmp_path):
    config = transformers.GPT2Config(vocab_size=40, n_embd=12, n_head=3, n_layer=1, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    rewrite_weights(tmp_path, lambda s: s.update({"lm_head.weight": torch.randn(40, 12)}))
    with pytest.raises(CheckpointError, match="lm_head.weight differs from the token embedding"):
        lmforge.load(tmp_path)
