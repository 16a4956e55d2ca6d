"""Proof of Hugging Face interop: tiny random HF models (every supported model type and head, varied
sizes and odd head counts) saved with save_pretrained, loaded by lmforge, compared on a right-padded
batch at real positions; then exported back, reloaded by transformers and compared again."""

from __future__ import annotations

import pytest
import torch

import lmforge
from lmforge.checkpoint.hf import export_hf

transformers = pytest.importorskip("transformers")
T = transformers

TOLERANCE = 1e-4
LENGTHS = [9, 6, 4]  # right-padded batch


def gpt2(**kw):
    return T.GPT2Config(**{**dict(vocab_size=97, n_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=1), **kw})


def bert(**kw):
    return T.BertConfig(**{**dict(vocab_size=97, max_position_embeddings=32, pad_token_id=0), **kw})


def roberta(**kw):
    return T.RobertaConfig(**{**dict(vocab_size=97, max_position_embeddings=34, pad_token_id=1, bos_token_id=0,
                                     eos_token_id=2, type_vocab_size=1), **kw})


def distilbert(**kw):
    return T.DistilBertConfig(**{**dict(vocab_size=97, max_position_embeddings=32, pad_token_id=0), **kw})


def bart(**kw):
    return T.BartConfig(**{**dict(vocab_size=97, max_position_embeddings=32), **kw})


def t5(**kw):
    return T.T5Config(**{**dict(vocab_size=97, decoder_start_token_id=0), **kw})


LABELS = dict(num_labels=3, id2label={0: "neg", 1: "pos", 2: "neutral"}, label2id={"neg": 0, "pos": 1, "neutral": 2})
GPT2_A = dict(n_embd=30, n_head=3, n_layer=2)
GPT2_B = dict(n_embd=40, n_head=5, n_layer=3, activation_function="relu", n_inner=56)
BERT_A = dict(hidden_size=30, num_attention_heads=3, num_hidden_layers=2, intermediate_size=44)
BERT_B = dict(hidden_size=25, num_attention_heads=5, num_hidden_layers=3, intermediate_size=36, hidden_act="gelu_new")
DISTIL_A = dict(dim=30, n_heads=3, n_layers=2, hidden_dim=44)
DISTIL_B = dict(dim=25, n_heads=5, n_layers=3, hidden_dim=36, activation="relu")
BART_A = dict(d_model=30, encoder_attention_heads=3, decoder_attention_heads=3, encoder_layers=2, decoder_layers=1,
              encoder_ffn_dim=44, decoder_ffn_dim=44)
BART_B = dict(d_model=40, encoder_attention_heads=5, decoder_attention_heads=5, encoder_layers=1, decoder_layers=2,
              encoder_ffn_dim=52, decoder_ffn_dim=52, scale_embedding=True, activation_function="relu")
T5_A = dict(d_model=30, num_heads=3, d_kv=8, num_layers=2, num_decoder_layers=1, d_ff=44,
            relative_attention_num_buckets=8, relative_attention_max_distance=12)
T5_V11 = dict(d_model=24, num_heads=5, d_kv=6, num_layers=1, num_decoder_layers=2, d_ff=40,
              feed_forward_proj="gated-gelu", tie_word_embeddings=False, relative_attention_num_buckets=16,
              relative_attention_max_distance=20)

# (id, HF model class, HF config, lmforge task it must load as)
CASES = [
    ("gpt2-lm", "GPT2LMHeadModel", gpt2(**GPT2_A), "causal-lm"),
    ("gpt2-lm-b", "GPT2LMHeadModel", gpt2(**GPT2_B), "causal-lm"),
    ("gpt2-seqcls", "GPT2ForSequenceClassification", gpt2(**GPT2_B, **LABELS), "sequence-classification"),
    ("gpt2-tokcls", "GPT2ForTokenClassification", gpt2(**GPT2_A, **LABELS), "token-classification"),
    ("gpt2-base", "GPT2Model", gpt2(**GPT2_B), "embedding"),
    ("bert-mlm", "BertForMaskedLM", bert(**BERT_A), "masked-lm"),
    ("bert-mlm-b", "BertForMaskedLM", bert(**BERT_B), "masked-lm"),
    ("bert-seqcls", "BertForSequenceClassification", bert(**BERT_B, **LABELS), "sequence-classification"),
    ("bert-tokcls", "BertForTokenClassification", bert(**BERT_A, **LABELS), "token-classification"),
    ("bert-base", "BertModel", bert(**BERT_A), "embedding"),
    ("roberta-mlm", "RobertaForMaskedLM", roberta(**BERT_A), "masked-lm"),
    ("roberta-seqcls", "RobertaForSequenceClassification", roberta(**BERT_B, **LABELS), "sequence-classification"),
    ("roberta-tokcls", "RobertaForTokenClassification", roberta(**BERT_B, **LABELS), "token-classification"),
    ("roberta-base", "RobertaModel", roberta(**BERT_A), "embedding"),
    ("distilbert-mlm", "DistilBertForMaskedLM", distilbert(**DISTIL_A), "masked-lm"),
    ("distilbert-mlm-sin", "DistilBertForMaskedLM", distilbert(**DISTIL_B, sinusoidal_pos_embds=True), "masked-lm"),
    ("distilbert-seqcls", "DistilBertForSequenceClassification", distilbert(**DISTIL_B, **LABELS),
     "sequence-classification"),
    ("distilbert-tokcls", "DistilBertForTokenClassification", distilbert(**DISTIL_A, **LABELS),
     "token-classification"),
    ("distilbert-base", "DistilBertModel", distilbert(**DISTIL_B), "embedding"),
    ("bart-lm", "BartForConditionalGeneration", bart(**BART_A), "seq2seq-lm"),
    ("bart-lm-b", "BartForConditionalGeneration", bart(**BART_B), "seq2seq-lm"),
    ("bart-base", "BartModel", bart(**BART_A), "embedding"),
    ("t5-lm", "T5ForConditionalGeneration", t5(**T5_A), "seq2seq-lm"),
    ("t5-v1_1-lm", "T5ForConditionalGeneration", t5(**T5_V11), "seq2seq-lm"),
    ("t5-base", "T5Model", t5(**T5_V11), "embedding"),
]


def random_hf_model(class_name: str, config):
    """A random HF model whose norms and biases are perturbed too (so a swapped weight cannot hide)."""
    torch.manual_seed(0)
    model = getattr(T, class_name)(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.normal_()
    return model


def batch(config, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (no special ids among the real tokens) and their mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, config.vocab_size, (len(LENGTHS), max(LENGTHS)), generator=generator)
    mask = (torch.arange(max(LENGTHS))[None] < torch.tensor(LENGTHS)[:, None]).long()
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    return ids.masked_fill(mask == 0, pad), mask


def hf_outputs(model, task: str, ids, mask, decoder_ids, decoder_mask) -> torch.Tensor:
    """What the lmforge model must reproduce, from the HF model, in lmforge's output convention."""
    with torch.no_grad():
        if task == "embedding":
            if model.config.is_encoder_decoder:
                hidden = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
            else:
                hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            return torch.nn.functional.normalize(pooled, dim=-1)
        if model.config.is_encoder_decoder:
            return model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids,
                         decoder_attention_mask=decoder_mask).logits
        return model(input_ids=ids, attention_mask=mask).logits


def our_outputs(model, ids, mask, decoder_ids, decoder_mask) -> torch.Tensor:
    with torch.no_grad():
        if model.config.is_encoder_decoder and model.task != "embedding":
            return model(ids, mask, decoder_input_ids=decoder_ids, decoder_attention_mask=decoder_mask).logits
        if model.config.is_encoder_decoder:
            return model(ids, mask).logits
        return model(ids, attention_mask=mask).logits


def max_difference(ours, theirs, mask, decoder_mask, model) -> float:
    """Largest |difference| at real positions (per-token outputs) or over the whole (per-sequence) output."""
    if ours.dim() == 3:
        real = (decoder_mask if model.config.is_encoder_decoder else mask).bool()
        ours, theirs = ours[real], theirs[real]
    assert ours.shape == theirs.shape
    return (ours - theirs).abs().max().item()


def inputs(config):
    ids, mask = batch(config, seed=1)
    decoder_ids, decoder_mask = batch(config, seed=2)
    decoder_mask = decoder_mask.flip(0)  # different lengths from the source
    decoder_ids = decoder_ids.masked_fill(decoder_mask == 0, config.pad_token_id or 0)
    return ids, mask, decoder_ids, decoder_mask


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_load_matches_hf_and_export_round_trips(case, tmp_path):
    _, class_name, config, task = case
    reference = random_hf_model(class_name, config)
    reference.save_pretrained(tmp_path / "hf")
    ids, mask, decoder_ids, decoder_mask = inputs(config)
    expected = hf_outputs(reference, task, ids, mask, decoder_ids, decoder_mask)

    model = lmforge.load(tmp_path / "hf").eval()
    assert model.task == task
    got = our_outputs(model, ids, mask, decoder_ids, decoder_mask)
    assert max_difference(got, expected, mask, decoder_mask, model) <= TOLERANCE
    if task in ("sequence-classification", "token-classification"):
        assert model.config.id2label == {0: "neg", 1: "pos", 2: "neutral"}

    export_hf(model, tmp_path / "back")
    reloaded = getattr(T, class_name).from_pretrained(tmp_path / "back").eval()
    again = hf_outputs(reloaded, task, ids, mask, decoder_ids, decoder_mask)
    assert max_difference(again, expected, mask, decoder_mask, model) <= TOLERANCE
    count = sum(p.numel() for p in reference.parameters())
    assert sum(p.numel() for p in reloaded.parameters()) == count
    assert model.num_parameters() == count
