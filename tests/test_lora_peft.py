"""LoRA adapters against PEFT, the oracle, on tiny random Hugging Face models of every supported model type:

- an adapter PEFT creates (random non-zero B, a trained-looking head) loads into lmforge with the same logits;
- an adapter lmforge trains (real optimizer steps, so GPT-2's q, k and v pairs drift apart) loads into PEFT
  on the Hugging Face model with the same logits;
- merged equals unmerged, and merge_and_unload gives a plain model with the same logits.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_hf_parity import (BART_A, BERT_A, BERT_B, DISTIL_A, GPT2_A, GPT2_B, LABELS, T5_A, T5_V11, bart, bert,
                            distilbert, gpt2, hf_outputs, inputs, max_difference, our_outputs, random_hf_model,
                            roberta, t5)

import lmforge
from lmforge.checkpoint.adapter import save_adapter
from lmforge.checkpoint.hf.formats import FORMATS
from lmforge.models.lora import LoraSettings, add_lora, lora_layers, merge_and_unload, set_merged, trainable_parameters

T = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

TOLERANCE = 1e-4
MERGE_TOLERANCE = 1e-5
HF_TARGETS = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "bert": ["query", "key", "value", "dense"],
    "roberta": ["query", "key", "value", "dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "bart": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "t5": ["q", "k", "v", "o", "wi", "wo", "wi_0", "wi_1"],
    "llama": "all-linear", "mistral": "all-linear", "qwen2": "all-linear", "qwen3": "all-linear",
}
PEFT_TASK = {"causal-lm": "CAUSAL_LM", "seq2seq-lm": "SEQ_2_SEQ_LM", "sequence-classification": "SEQ_CLS",
             "token-classification": "TOKEN_CLS", "masked-lm": None, "embedding": None}
CASES = [
    ("gpt2-lm", "GPT2LMHeadModel", gpt2(**GPT2_A), "causal-lm"),
    ("gpt2-seqcls", "GPT2ForSequenceClassification", gpt2(**GPT2_B, **LABELS), "sequence-classification"),
    ("bert-seqcls", "BertForSequenceClassification", bert(**BERT_B, **LABELS), "sequence-classification"),
    ("bert-mlm", "BertForMaskedLM", bert(**BERT_A), "masked-lm"),
    ("roberta-seqcls", "RobertaForSequenceClassification", roberta(**BERT_B, **LABELS), "sequence-classification"),
    ("roberta-tokcls", "RobertaForTokenClassification", roberta(**BERT_A, **LABELS), "token-classification"),
    ("distilbert-seqcls", "DistilBertForSequenceClassification", distilbert(**DISTIL_A, **LABELS),
     "sequence-classification"),
    ("bart-lm", "BartForConditionalGeneration", bart(**BART_A), "seq2seq-lm"),
    ("t5-lm", "T5ForConditionalGeneration", t5(**T5_A), "seq2seq-lm"),
    ("t5-v1_1-lm", "T5ForConditionalGeneration", t5(**T5_V11), "seq2seq-lm"),
]
# Modern decoders with grouped-query attention (k and v narrower than q), when lmforge reads their format.
DECODER = dict(vocab_size=97, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
               num_hidden_layers=2, max_position_embeddings=64, pad_token_id=0)
CASES += [(f"{t}-lm", f"{name}ForCausalLM", getattr(T, f"{name}Config")(**DECODER, **extra), "causal-lm")
          for t, name, extra in (("llama", "Llama", {}), ("mistral", "Mistral", {}), ("qwen2", "Qwen2", {}),
                                 ("qwen3", "Qwen3", {"head_dim": 8}))
          if t in FORMATS]
IDS = [c[0] for c in CASES]


def peft_model(reference, model_type: str, task: str, rslora: bool):
    """PEFT's LoRA on `reference`: random A and B (init_lora_weights=False), the head perturbed as if trained."""
    torch.manual_seed(3)
    config = peft.LoraConfig(r=4, lora_alpha=6, target_modules=HF_TARGETS[model_type], init_lora_weights=False,
                             use_rslora=rslora, task_type=PEFT_TASK[task])
    model = peft.get_peft_model(reference, config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "modules_to_save" in name:
                param.add_(torch.randn_like(param) * 0.5)
    return model


@pytest.mark.parametrize("rslora", [False, True], ids=["lora", "rslora"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_peft_adapter_loads_into_lmforge(case, rslora, tmp_path):
    _, class_name, config, task = case
    reference = random_hf_model(class_name, config)
    reference.save_pretrained(tmp_path / "hf")
    adapted = peft_model(reference, config.model_type, task, rslora)
    adapted.save_pretrained(tmp_path / "adapter")
    ids, mask, decoder_ids, decoder_mask = inputs(config)
    expected = hf_outputs(adapted, task, ids, mask, decoder_ids, decoder_mask)
    base = hf_outputs(random_hf_model(class_name, config), task, ids, mask, decoder_ids, decoder_mask)

    model = lmforge.load(tmp_path / "hf", adapter=tmp_path / "adapter").eval()
    got = our_outputs(model, ids, mask, decoder_ids, decoder_mask)
    assert max_difference(got, expected, mask, decoder_mask, model) <= TOLERANCE
    assert max_difference(got, base, mask, decoder_mask, model) > 100 * TOLERANCE  # the adapter does something
    assert_merge_exact(model, ids, mask, decoder_ids, decoder_mask)


def assert_merge_exact(model, ids, mask, decoder_ids, decoder_mask) -> None:
    """Merged equals unmerged within 1e-5, and unmerging restores the weights, in float64 (so float32
    rounding of large random logits does not hide or fake a difference); in float32 within 1e-5 relative."""
    unmerged = our_outputs(model, ids, mask, decoder_ids, decoder_mask)
    set_merged(model, True)
    scale = unmerged.abs().max().item()
    assert max_difference(our_outputs(model, ids, mask, decoder_ids, decoder_mask), unmerged, mask, decoder_mask,
                          model) <= 1e-5 * scale
    set_merged(model, False)
    model.double()
    weights = {n: t.clone() for n, t in model.state_dict().items()}
    exact = our_outputs(model, ids, mask, decoder_ids, decoder_mask)
    set_merged(model, True)
    assert max_difference(our_outputs(model, ids, mask, decoder_ids, decoder_mask), exact, mask, decoder_mask,
                          model) <= MERGE_TOLERANCE
    set_merged(model, False)
    assert all((t - weights[n]).abs().max() <= 1e-12 for n, t in model.state_dict().items() if t.is_floating_point())
    model.float()


def train_a_little(model, ids, mask, decoder_ids, decoder_mask, steps: int = 3) -> None:
    """Real optimizer steps on random labels (so every pair's A and B move, each its own way)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    model.train()
    for _ in range(steps):
        if model.config.is_encoder_decoder:
            out = model(ids, mask, decoder_input_ids=decoder_ids, decoder_attention_mask=decoder_mask,
                        labels=decoder_ids.masked_fill(decoder_mask == 0, -100))
        elif model.task == "sequence-classification":
            out = model(ids, attention_mask=mask, labels=torch.tensor([0, 1, 2]))
        else:
            out = model(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)
                        if model.task != "token-classification" else (ids % 3).masked_fill(mask == 0, -100))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.mark.parametrize("targets", ["all-linear", "q,v,down"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_lmforge_adapter_loads_into_peft(case, targets, tmp_path):
    _, class_name, config, task = case
    random_hf_model(class_name, config).save_pretrained(tmp_path / "hf")
    ids, mask, decoder_ids, decoder_mask = inputs(config)
    model = lmforge.load(tmp_path / "hf")
    head = [n for n in model.state_dict() if n.startswith("head.") and task in ("sequence-classification",
                                                                                   "token-classification")]
    add_lora(model, LoraSettings(r=3, alpha=5.0, dropout=0.1, targets=targets), trainable=head)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    train_a_little(model, ids, mask, decoder_ids, decoder_mask)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)  # base untouched
    ours = our_outputs(model, ids, mask, decoder_ids, decoder_mask)
    save_adapter(model, tmp_path / "adapter", base=str(tmp_path / "hf"))

    reference = getattr(T, class_name).from_pretrained(tmp_path / "hf")
    loaded = peft.PeftModel.from_pretrained(reference, tmp_path / "adapter").eval()
    theirs = hf_outputs(loaded, task, ids, mask, decoder_ids, decoder_mask)
    assert max_difference(ours, theirs, mask, decoder_mask, model) <= TOLERANCE
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert json.loads((tmp_path / "adapter" / "lmforge_adapter.json").read_text())["trainable_parameters"] == n_trainable

    again = lmforge.load(tmp_path / "hf", adapter=tmp_path / "adapter").eval()  # and back into lmforge
    assert max_difference(our_outputs(again, ids, mask, decoder_ids, decoder_mask), ours, mask, decoder_mask,
                          model) <= TOLERANCE
    assert trainable_parameters(again) > 0
    plain = merge_and_unload(again)
    assert not any(".lora." in n for n in plain.state_dict())
    assert max_difference(our_outputs(plain, ids, mask, decoder_ids, decoder_mask), ours, mask, decoder_mask,
                          model) <= TOLERANCE


def test_a_peft_adapter_for_another_base_names_the_first_mismatch(tmp_path):
    from lmforge.errors import CheckpointError

    reference = random_hf_model("BertForMaskedLM", bert(**BERT_A))
    peft_model(reference, "bert", "masked-lm", False).save_pretrained(tmp_path / "adapter")
    random_hf_model("DistilBertForMaskedLM", distilbert(**DISTIL_A)).save_pretrained(tmp_path / "distilbert")
    with pytest.raises(CheckpointError, match=r"adapts bert\.encoder\.layer\.0\..*which this distilbert masked-lm "
                                              "base does not have"):
        lmforge.load(tmp_path / "distilbert", adapter=tmp_path / "adapter")
    random_hf_model("BertForMaskedLM", bert(**BERT_B)).save_pretrained(tmp_path / "narrower")
    with pytest.raises(CheckpointError, match=r"lora_A \(4, 30\) .* needs \(4, 25\)"):
        lmforge.load(tmp_path / "narrower", adapter=tmp_path / "adapter")
    narrower = lmforge.load(tmp_path / "narrower")
    with pytest.raises(CheckpointError):
        lmforge.pipeline("fill-mask", narrower, adapter=tmp_path / "adapter")
    assert not lora_layers(narrower) and all(p.requires_grad for p in narrower.parameters())  # left as it was
