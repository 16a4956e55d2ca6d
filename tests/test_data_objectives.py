"""Pretraining objectives: masking ratios and rules, span corruption and infilling reconstruct the text,
and every batch feeds its family's model directly."""

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge import build_model, presets
from lmforge.data import CausalLM, MaskedLM, SpanCorruption, TextInfilling, pack
from lmforge.tokenizer import train_tokenizer

TEXT = ("First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. First Citizen: You are all "
        "resolved rather to die than to famish? All: Resolved. resolved. First Citizen: First, you know Caius "
        "Marcius is chief enemy to the people! ") * 10


@pytest.fixture(scope="module")
def wordpiece():
    return train_tokenizer("wordpiece", 200, iter([TEXT]), lowercase=True)


@pytest.fixture(scope="module")
def unigram():
    return train_tokenizer("unigram", 260, iter([TEXT]))


@pytest.fixture(scope="module")
def bart_bpe():
    return train_tokenizer("bpe", 320, iter([TEXT]), specials={"bos": "<s>", "eos": "</s>", "pad": "<pad>",
                                                              "mask": "<mask>"})


def text_ids(tokenizer, count: int) -> np.ndarray:
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    return np.asarray((ids * (count // len(ids) + 1))[:count], dtype=np.int64)


def ordinary(tokenizer, draws: list[int]) -> list[int]:
    """Map arbitrary drawn integers onto the tokenizer's non-special ids."""
    pool = sorted(set(range(tokenizer.vocab_size)) - tokenizer.special_ids)
    return [pool[d % len(pool)] for d in draws]


draws = st.integers(min_value=0, max_value=10**6)


# ---- masked LM ---------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(8, 120), whole_word=st.booleans())
def test_mlm_masks_15_percent_never_specials(wordpiece, seed, length, whole_word):
    objective = MaskedLM(wordpiece, whole_word=whole_word)
    window = text_ids(wordpiece, length)
    batch = objective([window, window[: length // 2]], np.random.default_rng(seed))
    ids, labels = batch["input_ids"], batch["labels"]
    specials = torch.tensor(sorted(wordpiece.special_ids))
    original = torch.full_like(ids, wordpiece.pad_id)
    for row, part in enumerate((window, window[: length // 2])):
        original[row, : len(part) + 2] = torch.tensor([wordpiece.cls_id, *part, wordpiece.sep_id])
    chosen = labels != -100
    assert not torch.isin(original[chosen], specials).any()  # never special or pad
    assert torch.equal(labels[chosen], original[chosen])  # labels are the original ids
    assert torch.equal(ids[~chosen], original[~chosen])  # nothing else changes
    assert ids[0, 0] == wordpiece.cls_id and ids[0, length + 1] == wordpiece.sep_id
    for row, n in enumerate((length, length // 2)):
        target = max(1, round(0.15 * n))
        count = int(chosen[row].sum())
        assert count == target if not whole_word else 0 < count <= target


def test_mlm_80_10_10_over_many_draws(wordpiece):
    objective = MaskedLM(wordpiece)
    window = text_ids(wordpiece, 510)
    rng = np.random.default_rng(0)
    masked = random = kept = 0
    for _ in range(60):
        batch = objective([window] * 4, rng)
        chosen = batch["labels"] != -100
        new, old = batch["input_ids"][chosen], batch["labels"][chosen]
        masked += int((new == wordpiece.mask_id).sum())
        kept += int((new == old).sum())
        random += int(((new != old) & (new != wordpiece.mask_id)).sum())
    total = masked + random + kept
    assert total == 60 * 4 * round(0.15 * 510)
    assert abs(masked / total - 0.8) < 0.02
    assert abs(random / total - 0.1) < 0.015 and abs(kept / total - 0.1) < 0.015  # random may hit the same id


def test_whole_word_masking_masks_every_piece_of_a_word(wordpiece):
    objective = MaskedLM(wordpiece, whole_word=True)
    unseen = "the famished citizens spoke further unto chiefly resolving enemies, proceeding speakers " * 8
    window = np.asarray(wordpiece.encode(unseen, add_special_tokens=False)[:200])
    starts = wordpiece.word_starts()[window]
    assert not starts.all()  # the text has words split into pieces
    word = np.cumsum(starts)
    for seed in range(20):
        chosen = (objective([window], np.random.default_rng(seed))["labels"][0, 1:-1] != -100).numpy()
        for w in np.unique(word[chosen]):
            assert chosen[word == w].all()


# ---- span corruption -------------------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(drawn=st.lists(draws, min_size=2, max_size=300), seed=st.integers(0, 2**32 - 1))
def test_span_corruption_inputs_and_targets_rebuild_the_original(unigram, drawn, seed):
    tokens = ordinary(unigram, drawn)
    objective = SpanCorruption(unigram)
    inputs, targets = objective.corrupt(np.array(tokens), np.random.default_rng(seed))
    sentinels = list(objective.sentinels)
    assert inputs[-1] == targets[-1] == unigram.eos_id
    spans, current = {}, None
    for token in targets[:-1]:
        if token in sentinels:
            current = sentinels.index(token)
            spans[current] = []
        else:
            spans[current].append(int(token))
    rebuilt = []
    for token in inputs[:-1]:
        rebuilt += spans.pop(sentinels.index(token)) if token in sentinels else [int(token)]
    assert rebuilt == tokens and not spans
    assert len(inputs) - 1 + len(targets) - 1 == len(tokens) + 2 * objective.span_counts(len(tokens))[1]  # one sentinel per span in each


@pytest.mark.parametrize("seq_len", [16, 64, 512])
def test_span_corruption_fills_the_sequence_length_with_t5_density(unigram, seq_len):
    objective = SpanCorruption(unigram)
    length = objective.window_length(seq_len)
    batch = objective([text_ids(unigram, length)] * 3, np.random.default_rng(1))
    assert batch["input_ids"].shape == (3, seq_len) and batch["attention_mask"].all()
    noise, spans = objective.span_counts(length)
    assert noise == round(0.15 * length) and spans == round(noise / 3)
    assert batch["labels"].shape == (3, noise + spans + 1)


# ---- text infilling ----------------------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(drawn=st.lists(draws, min_size=1, max_size=300), seed=st.integers(0, 2**32 - 1), permute=st.booleans())
def test_infilling_target_is_the_original_and_30_percent_is_masked(bart_bpe, drawn, seed, permute):
    tokens = ordinary(bart_bpe, drawn)
    objective = TextInfilling(bart_bpe, permute_sentences=permute)
    batch = objective([np.array(tokens)], np.random.default_rng(seed))
    assert batch["labels"][0].tolist() == [bart_bpe.bos_id] + tokens + [bart_bpe.eos_id]
    corrupted = batch["input_ids"][0].tolist()
    assert corrupted[0] == bart_bpe.bos_id and corrupted[-1] == bart_bpe.eos_id
    kept = [t for t in corrupted[1:-1] if t != bart_bpe.mask_id]
    assert len(kept) == len(tokens) - round(0.3 * len(tokens))
    if not permute:  # kept tokens appear in order, and no two masks are adjacent
        it = iter(tokens)
        assert all(any(t == u for u in it) for t in kept)
        assert all(not (a == b == bart_bpe.mask_id) for a, b in zip(corrupted, corrupted[1:]))


def test_infilling_span_lengths_are_poisson_3(bart_bpe):
    objective = TextInfilling(bart_bpe)
    lengths = np.concatenate([objective._span_lengths(3000, np.random.default_rng(s))[:-1] for s in range(5)])
    assert abs(lengths.mean() - 3.0) < 0.15 and abs(lengths.var() - 3.0) < 0.4


def test_sentence_permutation_keeps_the_sentences(bart_bpe):
    objective = TextInfilling(bart_bpe, mask_ratio=0.0, permute_sentences=True)
    window = np.asarray(bart_bpe.encode("One two. Three four! Five six? Seven.", add_special_tokens=False))
    orders = set()
    for seed in range(20):
        shuffled = objective([window], np.random.default_rng(seed))["input_ids"][0, 1:-1]
        text = bart_bpe.decode(shuffled.tolist())
        assert sorted(text.replace(" ", "")) == sorted("One two. Three four! Five six? Seven.".replace(" ", ""))
        orders.add(text)
    assert len(orders) > 5


# ---- causal LM and model compatibility ---------------------------------------------------------------------------
def test_pack_concatenates_documents_with_separators():
    blocks = list(pack([[1, 2, 3], [4, 5], [6, 7, 8, 9]], block_size=4, separator_id=0))
    assert [b.tolist() for b in blocks] == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]


def tiny(preset, tokenizer, task):
    config = dataclasses.replace(presets.get(preset), vocab_size=tokenizer.vocab_size)
    for role in ("pad", "bos", "eos", "mask"):
        setattr(config, f"{role}_token_id", tokenizer.special_id(role))
    if config.is_encoder_decoder:
        config.decoder_start_token_id = tokenizer.special_id("pad") if preset == "tiny-t5" else tokenizer.eos_id
    return build_model(config, task)


@pytest.mark.parametrize("preset, task, make", [
    ("tiny-gpt2", "causal-lm", lambda t: CausalLM(t)),
    ("tiny-bert", "masked-lm", lambda t: MaskedLM(t)),
    ("tiny-t5", "seq2seq-lm", lambda t: SpanCorruption(t)),
    ("tiny-bart", "seq2seq-lm", lambda t: TextInfilling(t, permute_sentences=True)),
])
def test_batches_feed_the_model_directly(preset, task, make, wordpiece, unigram, bart_bpe):
    tokenizer = {"tiny-gpt2": bart_bpe, "tiny-bert": wordpiece, "tiny-t5": unigram, "tiny-bart": bart_bpe}[preset]
    objective = make(tokenizer)
    windows = [text_ids(tokenizer, objective.window_length(32))] * 3
    batch = objective(windows, np.random.default_rng(0))
    assert batch["input_ids"].shape[1] <= 32
    output = tiny(preset, tokenizer, task)(**batch)
    assert torch.isfinite(output.loss) and output.loss > 0
