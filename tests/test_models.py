"""Behaviour every model must have, for every family: causality, padding invariance, the KV cache, learning."""

import pytest
import torch

from lmforge import build_model, presets
from lmforge.errors import ConfigError, InputError

DECODERS = ["tiny-gpt2"]
ENCODERS = ["tiny-bert", "tiny-distilbert", "tiny-roberta"]
SEQ2SEQ = ["tiny-t5", "tiny-t5-v1_1", "tiny-bart", "tiny-transformer"]


def eval_model(name, task=None):
    config = presets.get(name).replace(dropout=0.0, attention_dropout=0.0)
    return build_model(config, task).eval()


def ids(batch, length, low=5, high=500):
    return torch.randint(low, high, (batch, length))


# ---- causality -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DECODERS + SEQ2SEQ)
def test_changing_a_later_token_never_changes_earlier_outputs(name):
    model = eval_model(name)
    tokens = ids(2, 10)
    changed = tokens.clone()
    t = 6
    changed[:, t + 1] = (changed[:, t + 1] + 7) % 500
    if model.config.is_encoder_decoder:
        source = ids(2, 8)
        before = model(source, decoder_input_ids=tokens).logits
        after = model(source, decoder_input_ids=changed).logits
    else:
        before, after = model(tokens).logits, model(changed).logits
    assert torch.allclose(before[:, : t + 1], after[:, : t + 1], atol=1e-6)
    assert not torch.allclose(before[:, t + 1:], after[:, t + 1:], atol=1e-4)


# ---- padding invariance --------------------------------------------------------------------------------
def _padded(sequences, pad, left=False):
    length = max(len(s) for s in sequences)
    batch = torch.full((len(sequences), length), pad)
    mask = torch.zeros(len(sequences), length, dtype=torch.long)
    for row, s in enumerate(sequences):
        span = slice(length - len(s), length) if left else slice(0, len(s))
        batch[row, span] = torch.tensor(s)
        mask[row, span] = 1
    return batch, mask


@pytest.mark.parametrize("name", DECODERS + ENCODERS)
@pytest.mark.parametrize("left", [False, True])
def test_padded_batch_equals_each_sequence_alone(name, left):
    model = eval_model(name)
    sequences = [ids(1, n)[0].tolist() for n in (9, 4, 6)]
    batch, mask = _padded(sequences, pad=1, left=left)
    batched = model(batch, mask).logits
    for row, s in enumerate(sequences):
        alone = model(torch.tensor([s])).logits[0]
        real = mask[row].bool()
        torch.testing.assert_close(batched[row, real], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_seq2seq_padding_invariance(name):
    model = eval_model(name)
    sources = [ids(1, n)[0].tolist() for n in (9, 5)]
    targets = [ids(1, n)[0].tolist() for n in (4, 7)]
    src, src_mask = _padded(sources, pad=0)
    tgt, tgt_mask = _padded(targets, pad=0)
    batched = model(src, src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask).logits
    for row in range(2):
        alone = model(torch.tensor([sources[row]]), decoder_input_ids=torch.tensor([targets[row]])).logits[0]
        torch.testing.assert_close(batched[row, tgt_mask[row].bool()], alone, atol=1e-5, rtol=1e-4)


# ---- KV cache --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DECODERS + SEQ2SEQ)
def test_token_by_token_with_cache_equals_full_forward(name):
    model = eval_model(name)
    tokens = ids(2, 9)
    mask = torch.ones_like(tokens)
    mask[1, :3] = 0  # a left-padded row
    source = ids(2, 6) if model.config.is_encoder_decoder else None
    with torch.no_grad():
        if source is not None:
            full = model(source, decoder_input_ids=tokens, decoder_attention_mask=mask).logits
            encoded = model.encode(source)
        else:
            full = model(tokens, mask).logits
        cache = model.new_cache(batch=2, max_len=16)
        steps = []
        for t in range(tokens.shape[1]):
            kwargs = dict(cache=cache)
            if source is not None:
                out = model(encoder_hidden_states=encoded, decoder_input_ids=tokens[:, t:t + 1],
                            decoder_attention_mask=mask[:, : t + 1], **kwargs)
            else:
                out = model(tokens[:, t:t + 1], mask[:, : t + 1], **kwargs)
            steps.append(out.logits)
    stepped = torch.cat(steps, dim=1)
    real = mask.bool()
    torch.testing.assert_close(stepped[real], full[real], atol=1e-5, rtol=1e-4)
    assert cache.length == tokens.shape[1]


def test_prompt_then_steps_with_cache():
    model = eval_model("tiny-gpt2")
    tokens = ids(1, 12)
    with torch.no_grad():
        full = model(tokens).logits
        cache = model.new_cache(1, 12)
        first = model(tokens[:, :8], cache=cache).logits
        rest = model(tokens[:, 8:], cache=cache).logits  # several new tokens after a cached prompt
    torch.testing.assert_close(torch.cat([first, rest], 1), full, atol=1e-5, rtol=1e-4)


def test_cache_overflow_is_a_clear_error():
    model = eval_model("tiny-gpt2")
    cache = model.new_cache(1, 4)
    with pytest.raises(InputError, match="KV cache holds 4 tokens"):
        model(ids(1, 5), cache=cache)


# ---- every family and head learns -----------------------------------------------------------------------
def _overfit(model, batch, steps=60):
    # T5 (RMS-norm, tiny tied logits at init) trains with a larger step, as in its paper (1e-2)
    lr = 1e-2 if model.config.norm == "rms" else 3e-3
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


CASES = [
    ("tiny-gpt2", "causal-lm"), ("tiny-gpt2", "sequence-classification"), ("tiny-gpt2", "token-classification"),
    ("tiny-bert", "masked-lm"), ("tiny-bert", "sequence-classification"), ("tiny-bert", "token-classification"),
    ("tiny-distilbert", "sequence-classification"), ("tiny-roberta", "masked-lm"),
    ("tiny-t5", "seq2seq-lm"), ("tiny-t5-v1_1", "seq2seq-lm"), ("tiny-bart", "seq2seq-lm"),
    ("tiny-transformer", "seq2seq-lm"),
]


@pytest.mark.parametrize("name, task", CASES)
def test_loss_falls_when_overfitting_a_tiny_batch(name, task):
    model = build_model(presets.get(name).replace(num_labels=3), task)
    tokens = ids(4, 12)
    mask = torch.ones_like(tokens)
    mask[2, 9:] = 0
    batch = dict(input_ids=tokens, attention_mask=mask)
    if task == "causal-lm":
        batch["labels"] = tokens.masked_fill(mask == 0, -100)
    elif task == "masked-lm":
        labels = torch.full_like(tokens, -100)
        labels[:, 3] = tokens[:, 3]
        labels[:, 7] = tokens[:, 7]
        batch["input_ids"] = tokens.clone()
        batch["input_ids"][:, [3, 7]] = 4
        batch["labels"] = labels
    elif task == "sequence-classification":
        batch["labels"] = torch.tensor([0, 1, 2, 1])
    elif task == "token-classification":
        batch["labels"] = torch.randint(0, 3, tokens.shape).masked_fill(mask == 0, -100)
    else:
        batch["labels"] = ids(4, 7)
    losses = _overfit(model, batch)
    assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])


# ---- bad input ---------------------------------------------------------------------------------------------
def test_token_id_outside_vocabulary():
    model = eval_model("tiny-gpt2")
    with pytest.raises(InputError, match="token id 512.*vocabulary"):
        model(torch.tensor([[1, 2, 512]]))


def test_sequence_longer_than_position_table():
    model = eval_model("tiny-bert")
    with pytest.raises(InputError, match="129 tokens.*at most 128"):
        model(ids(1, 129))


def test_wrong_shapes():
    model = eval_model("tiny-bert")
    with pytest.raises(InputError, match=r"\(batch, length\)"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(InputError, match="attention_mask has shape"):
        model(ids(2, 5), torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(InputError, match="labels have shape"):
        build_model(presets.get("tiny-bert"), "token-classification")(ids(2, 5), labels=torch.zeros(2, 4).long())


def test_task_not_available_for_family():
    with pytest.raises(ConfigError, match="not available for a encoder-decoder model"):
        build_model("tiny-t5", "token-classification")
    with pytest.raises(ConfigError, match="unknown task"):
        build_model("tiny-gpt2", "translation")


def test_embedding_task_gives_unit_vectors():
    model = eval_model("tiny-bert", "embedding")
    out = model(ids(3, 6)).logits
    assert out.shape == (3, 64)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))


def test_masked_lm_loss_at_labelled_positions_only_equals_the_full_loss():
    from lmforge.data import MaskedLM

    masked_lm_loss = MaskedLM.loss

    torch.manual_seed(0)
    model = build_model(presets.get("tiny-bert"), "masked-lm").eval()
    ids = torch.randint(5, model.config.vocab_size, (3, 10))
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5], labels[1, 7], labels[2, 0] = 11, 12, 13, 14
    full = model(ids, labels=labels)
    sparse = model(ids, labels=labels, labelled_only=True)
    assert sparse.logits.shape == (4, model.config.vocab_size)
    torch.testing.assert_close(sparse.logits, full.logits[labels != -100])
    torch.testing.assert_close(sparse.loss, full.loss)
    grads = []
    for loss in (lambda: model(ids, labels=labels).loss, lambda: masked_lm_loss(model, {"input_ids": ids, "labels": labels})):
        model.zero_grad()
        loss().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6)
