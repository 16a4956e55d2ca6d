"""Proof of Llama / Mistral / Qwen2 / Qwen3 interop: tiny random Hugging Face models of every model type
and head, with varied shapes (GQA ratio 1, 2 and n_heads; head size != hidden / heads; tied and untied;
linear, llama3 and yarn rope scaling; Qwen2's q/k/v biases; Qwen3's q/k norms; sliding windows) are
saved with save_pretrained, loaded by lmforge and compared on a left-padded batch; greedy and beam
generations must be token-identical to `generate`; the export must load in transformers with the same
logits. transformers is the oracle only."""

from __future__ import annotations

import json

import pytest
import torch

import lmforge
from lmforge.checkpoint.hf import export_hf
from lmforge.errors import CheckpointError
from test_hf_parity import random_hf_model

transformers = pytest.importorskip("transformers")
T = transformers

TOLERANCE = 1e-4
LENGTHS = [9, 6, 4]  # left-padded batch
LABELS = dict(num_labels=3, id2label={0: "neg", 1: "pos", 2: "neutral"}, label2id={"neg": 0, "pos": 1, "neutral": 2})
COMMON = dict(vocab_size=97, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
              rms_norm_eps=1e-5)


def llama(**kw):
    return T.LlamaConfig(**{**COMMON, "hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 2,
                            "intermediate_size": 48, **kw})


def mistral(**kw):
    return T.MistralConfig(**{**COMMON, "hidden_size": 48, "num_attention_heads": 6, "num_key_value_heads": 2,
                              "num_hidden_layers": 2, "intermediate_size": 40, **kw})


def qwen2(**kw):
    return T.Qwen2Config(**{**COMMON, "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
                            "num_hidden_layers": 3, "intermediate_size": 44, **kw})


def qwen3(**kw):
    return T.Qwen3Config(**{**COMMON, "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
                            "head_dim": 12, "num_hidden_layers": 2, "intermediate_size": 44, **kw})


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8}
CASES = [  # (id, HF class, HF config, lmforge task)
    ("llama-mha-untied", "LlamaForCausalLM", llama(num_key_value_heads=4), "causal-lm"),
    ("llama-gqa2-headdim-llama3-tied", "LlamaForCausalLM",
     llama(num_key_value_heads=2, head_dim=12, tie_word_embeddings=True, rope_parameters=LLAMA3_ROPE), "causal-lm"),
    ("llama-mqa-linear-biases", "LlamaForCausalLM",
     llama(num_key_value_heads=1, attention_bias=True, mlp_bias=True,
           rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.5}), "causal-lm"),
    ("llama-seqcls", "LlamaForSequenceClassification", llama(num_key_value_heads=2, **LABELS), "sequence-classification"),
    ("llama-tokcls", "LlamaForTokenClassification", llama(num_key_value_heads=1, **LABELS), "token-classification"),
    ("llama-base", "LlamaModel", llama(num_key_value_heads=2), "embedding"),
    ("mistral-window", "MistralForCausalLM", mistral(sliding_window=4), "causal-lm"),
    ("mistral-seqcls", "MistralForSequenceClassification", mistral(sliding_window=None, **LABELS),
     "sequence-classification"),
    ("qwen2-biases-tied-window", "Qwen2ForCausalLM",
     qwen2(tie_word_embeddings=True, use_sliding_window=True, sliding_window=5, max_window_layers=1), "causal-lm"),
    ("qwen2-seqcls", "Qwen2ForSequenceClassification", qwen2(**LABELS), "sequence-classification"),
    ("qwen3-qknorm-tied", "Qwen3ForCausalLM", qwen3(tie_word_embeddings=True), "causal-lm"),
    ("qwen3-mqa-yarn-untied", "Qwen3ForCausalLM",
     qwen3(num_key_value_heads=1, attention_bias=True,
           rope_parameters={"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                            "original_max_position_embeddings": 16}), "causal-lm"),
    ("qwen3-seqcls", "Qwen3ForSequenceClassification", qwen3(**LABELS), "sequence-classification"),
]
LM_CASES = [c for c in CASES if c[3] == "causal-lm"]


def left_padded(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, COMMON["vocab_size"], (len(LENGTHS), max(LENGTHS)), generator=generator)
    mask = (torch.arange(max(LENGTHS))[None] >= (max(LENGTHS) - torch.tensor(LENGTHS))[:, None]).long()
    return ids.masked_fill(mask == 0, COMMON["pad_token_id"]), mask


def hf_outputs(model, task: str, ids, mask) -> torch.Tensor:
    """The HF model's outputs in lmforge's convention; positions count real tokens (as `generate` does)."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        if task == "embedding":
            hidden = model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            return torch.nn.functional.normalize(pooled, dim=-1)
        return model(input_ids=ids, attention_mask=mask, position_ids=positions).logits


def max_difference(ours, theirs, mask) -> float:
    if ours.dim() == 3:
        ours, theirs = ours[mask.bool()], theirs[mask.bool()]
    assert ours.shape == theirs.shape
    return (ours - theirs).abs().max().item()


def saved(tmp_path, class_name, config, name="hf"):
    reference = random_hf_model(class_name, config)
    reference.save_pretrained(tmp_path / name)
    return reference, tmp_path / name


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_load_matches_hf_and_export_round_trips(case, tmp_path):
    _, class_name, config, task = case
    reference, folder = saved(tmp_path, class_name, config)
    ids, mask = left_padded()
    expected = hf_outputs(reference, task, ids, mask)

    model = lmforge.load(folder).eval()
    assert model.task == task
    with torch.no_grad():
        got = model(ids, attention_mask=mask).logits
    assert max_difference(got, expected, mask) <= TOLERANCE

    export_hf(model, tmp_path / "back")
    reloaded = getattr(T, class_name).from_pretrained(tmp_path / "back").eval()
    assert max_difference(hf_outputs(reloaded, task, ids, mask), expected, mask) <= TOLERANCE
    count = sum(p.numel() for p in reference.parameters())
    assert sum(p.numel() for p in reloaded.parameters()) == count == model.num_parameters()


@pytest.mark.parametrize("case", LM_CASES, ids=[c[0] for c in LM_CASES])
@pytest.mark.parametrize("beams", [1, 3])
def test_generation_is_token_identical(case, beams, tmp_path):
    _, class_name, config, _ = case
    reference, folder = saved(tmp_path, class_name, config)
    model = lmforge.load(folder).eval()
    ids, mask = left_padded(seed=3)
    greedy = reference.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=10, pad_token_id=0)
    frequent = int(greedy[:, ids.shape[1]:].flatten().mode().values)  # so that rows stop at different steps
    stops = [2, frequent]
    options = dict(max_new_tokens=10, num_beams=beams, eos_token_id=stops, pad_token_id=0)
    expected = reference.generate(input_ids=ids, attention_mask=mask, do_sample=False, **options)
    got = model.generate(ids, mask, **options)
    assert got.shape == expected.shape
    assert until_stop(got, ids.shape[1], stops) == until_stop(expected, ids.shape[1], stops)


def until_stop(ids: torch.Tensor, start: int, stops: list[int]) -> list[list[int]]:
    """Each row up to and including its first stop token after `start` (Hugging Face fills finished beams
    with an EOS rather than the pad token; what was generated must be identical)."""
    rows = []
    for row in ids.tolist():
        end = next((i + 1 for i in range(start, len(row)) if row[i] in stops), len(row))
        rows.append(row[:end])
    return rows


def test_old_config_style_and_stored_tied_head(tmp_path):
    """rope_theta + rope_scaling (transformers 4 files) read like rope_parameters; a tied model whose file
    also stores lm_head.weight (a copy) loads; generation_config.json's eos list is what generate stops on."""
    config = llama(num_key_value_heads=2, tie_word_embeddings=True, rope_parameters=LLAMA3_ROPE)
    reference, folder = saved(tmp_path, "LlamaForCausalLM", config)
    data = json.loads((folder / "config.json").read_text())
    params = data.pop("rope_parameters")
    data["rope_theta"] = params.pop("rope_theta")
    data["rope_scaling"] = {**{k: v for k, v in params.items() if k != "rope_type"}, "type": "llama3"}
    (folder / "config.json").write_text(json.dumps(data))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7], "bos_token_id": 1}))
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})

    model = lmforge.load(folder).eval()
    assert model.config.rope_scaling == "llama3" and model.config.rotary_theta == 500000.0
    assert model.config.eos_token_id == [2, 7]
    ids, mask = left_padded()
    with torch.no_grad():
        got = model(ids, attention_mask=mask).logits
    assert max_difference(got, hf_outputs(reference, "causal-lm", ids, mask), mask) <= TOLERANCE
    expected = reference.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=8,
                                  eos_token_id=[2, 7], pad_token_id=0)
    got = model.generate(ids, mask, max_new_tokens=8)
    assert until_stop(got, ids.shape[1], [2, 7]) == until_stop(expected, ids.shape[1], [2, 7])

    export_hf(model, tmp_path / "back")
    assert json.loads((tmp_path / "back" / "generation_config.json").read_text())["eos_token_id"] == [2, 7]


def test_mismatching_tensor_is_named(tmp_path):
    config = qwen2()
    _, folder = saved(tmp_path, "Qwen2ForCausalLM", config)
    data = json.loads((folder / "config.json").read_text())
    data["num_key_value_heads"] = 4  # the file's k_proj/v_proj have 2 heads
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"layers\.0\.self_attn\.k_proj\.weight \(16, 32\)"):
        lmforge.load(folder)


def test_unknown_rope_type_names_the_known_ones(tmp_path):
    _, folder = saved(tmp_path, "LlamaForCausalLM", llama())
    data = json.loads((folder / "config.json").read_text())
    data["rope_parameters"] = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="rope scaling type 'dynamic' is not supported; known types: default, "
                                              "linear, llama3, yarn"):
        lmforge.load(folder)


@pytest.mark.parametrize("change, message", [
    ({"num_key_value_heads": 3}, "n_heads=4 is not divisible by n_kv_heads=3"),
    ({"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4}}, "known types: default, linear, llama3, yarn"),
    ({"num_hidden_layers": 3}, "lacks weights the model needs: layers.2."),
])
def test_bad_checkpoints_are_one_line_cli_errors(tmp_path, capsys, change, message):
    from lmforge.cli import main

    _, folder = saved(tmp_path, "LlamaForCausalLM", llama(num_key_value_heads=2))
    data = json.loads((folder / "config.json").read_text())
    data.update(change)
    (folder / "config.json").write_text(json.dumps(data))
    capsys.readouterr()  # transformers' own progress bars while saving
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("preset, model_type", [("tiny-llama", "llama"), ("tiny-mistral", "mistral"),
                                                ("tiny-qwen2", "qwen2"), ("tiny-qwen3", "qwen3")])
def test_presets_export_to_their_model_type(tmp_path, preset, model_type):
    """A model built from scratch finds the one Hugging Face model type that expresses it, by its fields."""
    torch.manual_seed(0)
    model = lmforge.build_model(preset).eval()
    export_hf(model, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == model_type
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids, mask = left_padded()
    with torch.no_grad():
        got = model(ids, attention_mask=mask).logits
    assert max_difference(got, hf_outputs(reference, "causal-lm", ids, mask), mask) <= TOLERANCE
