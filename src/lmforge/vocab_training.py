"""Deterministic vocabularies: the same corpus gives the same tokenizer file, byte for byte, every run.

Hugging Face `tokenizers` trains fast but not reproducibly for two of lmforge's three kinds:
  wordpiece  the trainer gives continuation symbols (`##e`) their ids in hash-map order, and equally
             frequent merges are ranked by those ids (huggingface/tokenizers#1794), so the vocabulary's ids
             and, at a tie on the size cut, its tokens change from run to run;
  unigram    the EM scores are sums taken in hash-map order, so their last bits and the order of pieces
             with equal scores change from run to run.
Byte-level BPE is reproducible as it is (its alphabet is the fixed 256 bytes).

`wordpiece_vocab` therefore builds the WordPiece vocabulary here, with no hash-map order anywhere: words
are counted, then merged by the usual rule (the most frequent adjacent pair first), ties broken by the
pair's text. `canonical_unigram` rounds the trained scores to 1e-6 and orders pieces by (score, text):
noise far below what changes a segmentation is removed, and ties get one order.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Iterable

PREFIX = "##"
SCORE_DECIMALS = 6
CHAR_STEP = 1e-3  # larger than the Unigram trainer's steps between the characters it appends


def count_words(texts: Iterable[str], normalize, pre_tokenize) -> Counter:
    """Word frequencies after the tokenizer's own normalizer and pre-tokenizer (callables on one string)."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenize(normalize(text)))
    return counts


def wordpiece_vocab(word_counts: dict[str, int], vocab_size: int, special_tokens: list[str],
                    min_frequency: int = 2, prefix: str = PREFIX) -> dict[str, int]:
    """A WordPiece vocabulary {token: id}: the special tokens, every character (first-in-word and `##`
    continuation forms, sorted), then merged tokens in merge order until `vocab_size` tokens or until the
    most frequent pair occurs fewer than `min_frequency` times. A pure function of its arguments."""
    words = sorted(word_counts)  # a fixed order: nothing below depends on hashing
    pieces = [[w[0]] + [prefix + c for c in w[1:]] for w in words]
    freq = [word_counts[w] for w in words]
    vocab: dict[str, int] = {}
    for token in list(special_tokens) + sorted({p for word in pieces for p in word}):
        vocab.setdefault(token, len(vocab))
    pair_count: Counter = Counter()
    holders: dict[tuple[str, str], set[int]] = defaultdict(set)  # pair -> indices of words holding it
    for index, word in enumerate(pieces):
        for pair in zip(word, word[1:]):
            pair_count[pair] += freq[index]
            holders[pair].add(index)
    heap = [(-count, pair) for pair, count in pair_count.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negative:
            continue  # a stale entry: the pair's count changed since it was pushed
        if -negative < min_frequency:
            break
        merged = pair[0] + pair[1][len(prefix):]  # the right part is always a continuation (## ...)
        vocab.setdefault(merged, len(vocab))
        changed = set()
        for index in sorted(holders.pop(pair, ())):
            old = pieces[index]
            new = _merge(old, pair, merged)
            for p in zip(old, old[1:]):
                pair_count[p] -= freq[index]
                holders[p].discard(index)
            for p in zip(new, new[1:]):
                pair_count[p] += freq[index]
                holders[p].add(index)
            changed.update(zip(old, old[1:]))
            changed.update(zip(new, new[1:]))
            pieces[index] = new
        pair_count.pop(pair, None)
        for p in sorted(changed - {pair}):
            if pair_count[p] > 0:
                heapq.heappush(heap, (-pair_count[p], p))
            else:
                pair_count.pop(p, None)
    return vocab


def _merge(word: list[str], pair: tuple[str, str], merged: str) -> list[str]:
    """`word` with every non-overlapping occurrence of `pair`, left to right, replaced by `merged`."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def canonical_unigram(pieces: list[tuple[str, float]], keep_first: int) -> list[tuple[str, float]]:
    """Unigram pieces with scores rounded to SCORE_DECIMALS and ordered by (-score, text); the first
    `keep_first` entries (the special tokens, whose ids the roles refer to) stay where they are.

    The trainer appends the characters that no kept piece covers at the end, a tiny step (1e-4 or 0)
    below one another, in hash-map order: that run keeps its scores, given to its characters in sorted order."""
    pieces = list(pieces)
    start = len(pieces) - 1
    while (start - 1 >= keep_first and len(pieces[start - 1][0]) == 1 and len(pieces[start][0]) == 1
           and 0 <= pieces[start - 1][1] - pieces[start][1] < CHAR_STEP):
        start -= 1
    scores = sorted((score for _, score in pieces[start:]), reverse=True)
    pieces[start:] = list(zip(sorted(piece for piece, _ in pieces[start:]), scores))
    head = [(piece, round(score, SCORE_DECIMALS)) for piece, score in pieces[:keep_first]]
    rest = sorted(((piece, round(score, SCORE_DECIMALS)) for piece, score in pieces[keep_first:]),
                  key=lambda item: (-item[1], item[0]))
    return head + rest
