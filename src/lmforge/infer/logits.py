"""Logits processors: what turns next-token scores (B, V) into the scores a token is picked from.

Order and semantics follow Hugging Face's `generate`: repetition penalty, then (sampling only)
temperature, top-k and top-p."""

from __future__ import annotations

from typing import Callable

import torch

from .options import GenerationOptions

Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (history (B, L), scores (B, V)) -> scores


def repetition_penalty(penalty: float) -> Processor:
    """Divide positive scores (multiply negative ones) of tokens in `history` by `penalty`.
    History ids equal to V (the vocabulary size) mark positions to ignore (prompt padding)."""

    def apply(history: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        padded = torch.nn.functional.pad(scores, (0, 1))  # (B, V+1): column V absorbs ignored ids
        picked = padded.gather(1, history)  # (B, L)
        picked = torch.where(picked < 0, picked * penalty, picked / penalty)
        return padded.scatter(1, history, picked)[:, :vocab]

    return apply


def temperature(value: float) -> Processor:
    return lambda history, scores: scores / value


def top_k(k: int, keep_at_least: int) -> Processor:
    """Keep the k best tokens (at least `keep_at_least`); the rest get -inf."""
    k = max(k, keep_at_least)

    def apply(history: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        kth_best = torch.topk(scores, min(k, scores.shape[-1])).values[:, -1:]  # (B, 1)
        return scores.masked_fill(scores < kth_best, float("-inf"))

    return apply


def top_p(p: float, keep_at_least: int) -> Processor:
    """Keep the smallest set of best tokens whose probabilities sum to at least p (nucleus sampling)."""

    def apply(history: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        ascending, order = torch.sort(scores, descending=False)  # (B, V)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - p)  # the least likely tokens, as long as the rest still reach p
        remove[:, -keep_at_least:] = False
        return scores.masked_fill(remove.scatter(1, order, remove), float("-inf"))

    return apply


def build_processors(options: GenerationOptions, n_stop_ids: int) -> list[Processor]:
    """The processors `options` ask for, in Hugging Face's order (empty for plain greedy/beam search)."""
    processors: list[Processor] = []
    if options.repetition_penalty != 1.0:
        processors.append(repetition_penalty(options.repetition_penalty))
    if options.do_sample:
        keep = max(2, n_stop_ids + 1) if options.num_beams > 1 else 1  # beams must keep a non-EOS continuation
        if options.temperature != 1.0:
            processors.append(temperature(options.temperature))
        if options.top_k:
            processors.append(top_k(options.top_k, keep))
        if options.top_p < 1.0:
            processors.append(top_p(options.top_p, keep))
    return processors


def apply_processors(processors: list[Processor], history: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    for processor in processors:
        scores = processor(history, scores)
    return scores
