"""The seams later work builds on: position-aware attention (rotary), key/value heads, head objects
found through one registry, the tokenizer attached through one call, one padding-id policy."""

import pytest
import torch
from torch import nn

import lmforge
from lmforge import build_model, presets
from lmforge.data import collate
from lmforge.errors import ConfigError, InputError
from lmforge.labels import IGNORE_INDEX
from lmforge.models.seq2seq import shift_right
from lmforge.models import DEFAULT_TASK, FAMILY_TASKS, HEADS, TASKS, Head


class Rotary(nn.Module):
    """A plain rotary position embedding (rotate-half form), written here as the seam's client."""

    def __init__(self, d_head: int):
        super().__init__()
        self.frequency = 10000.0 ** (-torch.arange(0, d_head, 2).float() / d_head)  # (D/2,)
        self.seen: list[torch.Tensor] = []

    def forward(self, q, k, position_ids):  # q (B, H, T, D), k (B, Hkv, T, D), position_ids (B|1, T)
        self.seen.append(position_ids)
        angle = position_ids[:, None, :, None].float() * self.frequency  # (B|1, 1, T, D/2)
        cos, sin = torch.cat([angle.cos()] * 2, -1), torch.cat([angle.sin()] * 2, -1)

        def rotate(x):
            first, second = x.chunk(2, dim=-1)
            return x * cos + torch.cat([-second, first], -1) * sin

        return rotate(q), rotate(k)


def rotary_decoder():
    config = presets.get("tiny-gpt2").replace(positions="none", dropout=0.0, attention_dropout=0.0, init_std=0.3)
    model = build_model(config).eval()
    rotary = Rotary(config.head_dim)
    for block in model.decoder.blocks:
        block.self_attn.rotary = rotary
    return model, rotary


def test_rotary_through_the_seam_decodes_with_the_cache_as_the_full_forward_computes():
    model, rotary = rotary_decoder()
    tokens = torch.randint(5, 500, (1, 9))
    with torch.no_grad():
        full = model(tokens).logits  # (1, 9, V)
        cache = model.new_cache(1, 9)
        steps = [model(tokens[:, :4], cache=cache).logits]
        steps += [model(tokens[:, t:t + 1], cache=cache).logits for t in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)
    assert rotary.seen[-1].tolist() == [[8]]  # the last step rotated by its own position
    for block in model.decoder.blocks:  # the rotation took part: without it the logits differ
        block.self_attn.rotary = None
    with torch.no_grad():
        assert not torch.allclose(model(tokens).logits, full, atol=1e-3)


def test_rows_at_different_positions_get_their_own_position_ids():
    model, rotary = rotary_decoder()
    short, long = torch.randint(5, 500, (1, 3)), torch.randint(5, 500, (1, 6))
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])  # left-padded (2, 6)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1] * 6])
    with torch.no_grad():
        together = model(batch, attention_mask=mask).logits
        alone_short, alone_long = model(short).logits, model(long).logits
    assert rotary.seen[0].tolist() == [[0, 0, 0, 0, 1, 2], [0, 1, 2, 3, 4, 5]]
    torch.testing.assert_close(together[0, 3:], alone_short[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(together[1], alone_long[0], rtol=1e-4, atol=1e-4)


def test_the_cache_is_sized_by_key_value_heads():
    config = presets.get("tiny-gpt2")
    assert config.kv_heads == config.n_heads and config.replace(n_kv_heads=config.n_heads).kv_heads == config.n_heads
    model = build_model(config)
    cache = model.new_cache(2, 8)
    assert cache.keys.shape == (config.n_layers, 2, config.kv_heads, 8, config.head_dim)
    assert model.decoder.blocks[0].self_attn.kv.out_features == 2 * config.kv_heads * config.head_dim
    assert isinstance(model.decoder.blocks[0].self_attn.q, nn.Linear)  # adapters wrap plain Linears
    grouped = build_model(config.replace(n_kv_heads=2))  # grouped-query attention: 2 query heads per key/value head
    assert grouped.new_cache(2, 8).keys.shape == (config.n_layers, 2, 2, 8, config.head_dim)
    with pytest.raises(ConfigError, match="n_heads=4 is not divisible by n_kv_heads=3"):
        config.replace(n_kv_heads=3)


def test_every_task_is_a_registered_head():
    assert TASKS == ("causal-lm", "masked-lm", "seq2seq-lm", "sequence-classification", "token-classification",
                     "embedding")
    assert FAMILY_TASKS == {
        "decoder": ("causal-lm", "sequence-classification", "token-classification", "embedding"),
        "encoder": ("masked-lm", "sequence-classification", "token-classification", "embedding"),
        "encoder-decoder": ("seq2seq-lm", "embedding"),
    }
    assert DEFAULT_TASK == {"decoder": "causal-lm", "encoder": "masked-lm", "encoder-decoder": "seq2seq-lm"}
    for name, family in (("tiny-gpt2", "decoder"), ("tiny-bert", "encoder"), ("tiny-bart", "encoder-decoder")):
        for task in FAMILY_TASKS[family]:
            model = build_model(name, task)
            assert isinstance(model.head, HEADS[task]) and model.head.task == task
            assert issubclass(HEADS[task], Head)


def test_a_head_owns_its_loss_and_what_is_compared():
    model = build_model(presets.get("tiny-gpt2").replace(dropout=0.0, attention_dropout=0.0)).eval()
    tokens = torch.randint(5, 500, (2, 7))
    labels = tokens.clone()
    labels[0, :3] = -100
    out = model(tokens, labels=labels)
    manual = nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]),
                                         labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, manual)
    assert model.head.scored_labels(labels) == int((labels[:, 1:] != -100).sum())
    classifier = build_model(presets.get("tiny-bert").replace(num_labels=1), "sequence-classification").eval()
    scores = classifier(tokens).logits
    target = torch.randn(2)
    torch.testing.assert_close(classifier.loss(scores, target), nn.functional.mse_loss(scores.squeeze(-1), target))
    assert classifier.head.soft_positions({"labels": target}) is None
    with pytest.raises(InputError, match="embedding task has no labels"):
        build_model("tiny-bert", "embedding").loss(scores, target)


def test_attach_tokenizer_is_the_one_way_a_model_gets_its_tokenizer(tmp_path):
    from tokenizers import Tokenizer as Backend
    from tokenizers import models

    backend = Backend(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "a": 2}, unk_token="[UNK]"))
    tokenizer = lmforge.Tokenizer(backend, {"pad": "[PAD]", "unk": "[UNK]"})
    model = build_model(presets.get("tiny-bert").replace(vocab_size=3, mask_token_id=None, pad_token_id=0))
    assert model.attach_tokenizer(tokenizer) is model and model.tokenizer is tokenizer
    model.save(tmp_path / "saved")
    assert lmforge.load(tmp_path / "saved").tokenizer.pad_id == 0


def test_padding_falls_back_to_a_special_token_and_none_is_a_clear_error():
    from tokenizers import Tokenizer as Backend
    from tokenizers import models

    backend = Backend(models.WordLevel({"<eos>": 0, "<unk>": 1, "a": 2, "b": 3}, unk_token="<unk>"))
    no_pad = lmforge.Tokenizer(backend, {"eos": "<eos>", "unk": "<unk>"})
    assert no_pad.pad_id is None and no_pad.padding_id == 0 == no_pad.eos_id
    no_pad_no_eos = lmforge.Tokenizer(backend, {"unk": "<unk>"})
    with pytest.raises(ConfigError, match="the tokenizer has no pad, end-of-sequence or separator token to pad a "
                                          "batch with; train it with one"):
        no_pad_no_eos.padding_id  # not a silent 0 (id 0 is <eos> here, a real token)
    examples = [{"input_ids": [2, 3, 2], "labels": 0}, {"input_ids": [3], "labels": 1}]
    batch = collate(examples, no_pad.padding_id)
    assert batch["input_ids"].tolist() == [[2, 3, 2], [3, 0, 0]] and batch["attention_mask"].tolist() == [[1, 1, 1],
                                                                                                        [1, 0, 0]]
    with pytest.raises(InputError, match="padding id is None"):
        collate(examples, no_pad.pad_id)


def test_decoder_inputs_from_labels_pad_by_the_one_policy():
    """shift_right fills -100 with config.padding_id: the pad (0 is a real pad, T5's), else the end-of-sequence
    id; a config with neither is a clear error, not a silent 0."""
    labels = torch.tensor([[5, 6, IGNORE_INDEX]])
    t5 = lmforge.build_model("tiny-t5")
    assert t5.config.pad_token_id == 0 and t5.config.padding_id == 0
    no_pad = lmforge.build_model(t5.config.replace(pad_token_id=None, eos_token_id=7, decoder_start_token_id=1))
    assert no_pad.config.padding_id == 7
    assert shift_right(labels, 1, no_pad.config.padding_id).tolist() == [[1, 5, 6]]
    neither = lmforge.build_model(t5.config.replace(pad_token_id=None, eos_token_id=None, decoder_start_token_id=1))
    with pytest.raises(ConfigError, match="has no pad, end-of-sequence or separator token.*set pad_token_id"):
        neither(torch.tensor([[5, 6]]), labels=labels)
    output = no_pad(torch.tensor([[5, 6]]), labels=labels)  # (B, T, V): the ignored label adds no loss
    assert output.logits.shape[:2] == (1, 3) and torch.isfinite(output.loss)
