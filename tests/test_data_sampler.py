"""The resumable sampler: determinism, exact resume, sharding; resumed pretraining batches match."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.data import MaskedLM, ResumableSampler, TokenShards, prepare_corpus, pretraining_batches
from lmforge.errors import DataError
from lmforge.tokenizer import train_tokenizer


def batches(sampler, epochs):
    return [batch for _ in range(epochs) for batch in sampler]


@settings(max_examples=80, deadline=None)
@given(items=st.integers(1, 60), batch=st.integers(1, 8), seed=st.integers(0, 1000), stop=st.integers(0, 40),
       drop_last=st.booleans())
def test_resume_sees_exactly_the_remaining_batches(items, batch, seed, stop, drop_last):
    if drop_last and items < batch:
        return
    reference = batches(ResumableSampler(items, batch, seed, drop_last=drop_last), 3)
    first = ResumableSampler(items, batch, seed, drop_last=drop_last)
    seen = []
    for _ in range(3):
        for indices in first:
            seen.append(indices)
            if len(seen) == min(stop, len(reference)):
                break
        if len(seen) == min(stop, len(reference)):
            break
    resumed = ResumableSampler(items, batch, seed=12345, drop_last=drop_last)
    resumed.load_state_dict(first.state_dict())
    rest = []
    while len(seen) + len(rest) < len(reference):
        rest += list(resumed)
    assert seen + rest == reference


def test_epochs_are_permutations_that_differ_and_repeat_by_seed():
    sampler = ResumableSampler(10, 5, seed=3, drop_last=False)
    epoch0, epoch1 = sum(list(sampler), []), sum(list(sampler), [])
    assert sorted(epoch0) == sorted(epoch1) == list(range(10)) and epoch0 != epoch1
    assert batches(ResumableSampler(10, 5, seed=3), 2) == [epoch0[:5], epoch0[5:], epoch1[:5], epoch1[5:]]
    assert sum(list(ResumableSampler(10, 5, shuffle=False)), []) == list(range(10))


@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_get_disjoint_equal_shares(drop_last):
    shares = [sum(list(ResumableSampler(23, 2, seed=1, rank=r, world_size=4, drop_last=drop_last)), [])
              for r in range(4)]
    assert len({len(s) for s in shares}) == 1
    flat = sum(shares, [])
    if drop_last:
        assert len(flat) == len(set(flat)) == 16
    else:
        assert set(flat) == set(range(23)) and len(flat) == 24  # one index repeated to even out


def test_mismatched_resume_and_bad_settings_are_clear_errors():
    state = ResumableSampler(10, 2).state_dict()
    with pytest.raises(DataError, match="num_items=10"):
        ResumableSampler(11, 2).load_state_dict(state)
    with pytest.raises(DataError, match="rank 2"):
        ResumableSampler(10, 2, rank=2, world_size=2)
    with pytest.raises(DataError, match="no full batch"):
        ResumableSampler(3, 4)


def test_resumed_pretraining_batches_are_identical(tmp_path):
    text = "the king is dead, long live the king. the queen speaks; the people listen. " * 30
    tokenizer = train_tokenizer("wordpiece", 120, iter([text]))
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    prepare_corpus([tmp_path / "a.txt"], tokenizer, tmp_path / "shards", valid_fraction=0.0, progress=False)
    shards, objective = TokenShards(tmp_path / "shards"), MaskedLM(tokenizer)
    windows = len(shards.train) // objective.window_length(16)
    straight = ResumableSampler(windows, 2, seed=7)
    reference = list(pretraining_batches(shards, objective, 2, 16, straight))
    assert len(reference) >= 4
    interrupted = ResumableSampler(windows, 2, seed=7)
    head = []
    for batch in pretraining_batches(shards, objective, 2, 16, interrupted):
        head.append(batch)
        if len(head) == 2:
            break
    resumed = ResumableSampler(windows, 2, seed=0)
    resumed.load_state_dict(interrupted.state_dict())
    tail = list(pretraining_batches(shards, objective, 2, 16, resumed))
    assert len(head) + len(tail) == len(reference)
    for got, want in zip(head + tail, reference):
        assert all(torch.equal(got[k], want[k]) for k in want)
