"""Beam search with Hugging Face's semantics (scores, length penalty, the three early-stopping modes).

Every step keeps, per input, the best `keep = max(2, 1 + n_stop) * num_beams` continuations of all
beams; the best `num_beams` that did not just stop run on, and those among the best `num_beams`
that did stop (a stop token, or the length limit) compete for the `num_beams` finished slots with
score = sum of log-probabilities / generated_length ** length_penalty. Ineligible entries are pushed
down by adding -1e9, exactly as Hugging Face does, so that ties resolve the same way.
"""

from __future__ import annotations

import torch

from .logits import Processor, apply_processors
from .options import GenerationOptions

NEG = -1.0e9  # the score of a slot that must never be chosen


def beam_search(stepper, sequence: torch.Tensor, prompt_len: int, history: torch.Tensor | None,
                processors: list[Processor], options: GenerationOptions, stop_ids: list[int], pad_id: int,
                generator: torch.Generator | None) -> torch.Tensor:
    """Decode with `options.num_beams` beams per input. sequence: (B, L) buffer holding the start
    tokens (prompt or decoder start) in its first `prompt_len` columns and `pad_id` after them.
    Returns the best finished hypothesis per input, (B, prompt_len + longest generated)."""
    batch, total = sequence.shape
    beams = options.num_beams
    device = sequence.device
    keep = max(2, 1 + len(stop_ids)) * beams
    stop = torch.tensor(stop_ids, dtype=torch.long, device=device)
    in_top_beams = torch.arange(keep, device=device) < beams  # (keep,)
    rows = torch.arange(batch, device=device)[:, None]  # (B, 1)

    logits = stepper.prefill()  # (B, V)
    expand = torch.arange(batch, device=device).repeat_interleave(beams)  # (B*K,)
    stepper.expand(expand)
    logits = logits.index_select(0, expand)  # (B*K, V)
    prompt_history = None if history is None else history[:, :prompt_len].index_select(0, expand)

    running = sequence[:, None].repeat(1, beams, 1)  # (B, K, L)
    running_scores = torch.zeros(batch, beams, device=device)
    running_scores[:, 1:] = NEG  # only the first beam may start: the others are copies of it
    finished = running.clone()  # (B, K, L)
    finished_scores = torch.full((batch, beams), NEG, device=device)
    finished_flag = torch.zeros(batch, beams, dtype=torch.bool, device=device)
    finished_len = torch.zeros(batch, beams, dtype=torch.long, device=device)  # generated tokens
    improvable = torch.ones(batch, 1, dtype=torch.bool, device=device)

    for cur in range(prompt_len, total):
        log_probs = torch.log_softmax(logits, dim=-1)  # (B*K, V)
        if processors:
            flat = running.view(batch * beams, total)[:, :cur]
            seen = flat if prompt_history is None else torch.cat([prompt_history, flat[:, prompt_len:]], dim=1)
            log_probs = apply_processors(processors, seen, log_probs)
        vocab = log_probs.shape[-1]
        totals = (log_probs.view(batch, beams, vocab) + running_scores[:, :, None]).view(batch, beams * vocab)
        cand_scores, cand_index = _best_continuations(totals, keep, options.do_sample, generator)  # (B, keep)
        source_beam, token = cand_index // vocab, cand_index % vocab
        candidates = running.gather(1, source_beam[:, :, None].expand(-1, -1, total)).clone()  # (B, keep, L)
        candidates[:, :, cur] = token
        stops = torch.isin(token, stop) | (cur + 1 >= total)  # (B, keep)

        # the best `beams` continuations that did not stop run on
        live_scores = cand_scores + stops.to(torch.float32) * NEG
        chosen = torch.topk(live_scores, k=beams).indices  # (B, K)
        running = candidates.gather(1, chosen[:, :, None].expand(-1, -1, total))
        running_scores = live_scores.gather(1, chosen)
        running_source = source_beam.gather(1, chosen)

        # those among the best `beams` that did stop may enter the finished slots
        just_finished = stops & in_top_beams[None, :]
        scored = cand_scores / ((cur + 1 - prompt_len) ** options.length_penalty)
        full = finished_flag.all(dim=-1, keepdim=True) & (options.early_stopping is True)
        scored = scored + full.to(torch.float32) * NEG
        scored = scored + (~improvable).to(torch.float32) * NEG
        scored = scored + (~just_finished) * NEG
        best = torch.topk(torch.cat([finished_scores, scored], dim=1), k=beams).indices  # (B, K)
        finished = torch.cat([finished, candidates], dim=1).gather(1, best[:, :, None].expand(-1, -1, total))
        finished_scores = torch.cat([finished_scores, scored], dim=1).gather(1, best)
        finished_flag = torch.cat([finished_flag, just_finished], dim=1).gather(1, best)
        new_len = torch.full_like(cand_scores, cur + 1 - prompt_len, dtype=torch.long)
        finished_len = torch.cat([finished_len, new_len], dim=1).gather(1, best)

        improvable = improvable & _may_improve(running_scores, finished_scores, finished_flag, cur + 1 - prompt_len,
                                               total - prompt_len, options)
        everything_full = bool(finished_flag.all()) and options.early_stopping is True
        if not bool(improvable.any()) or everything_full or bool(stops.all()):
            break
        stepper.reorder((running_source + rows * beams).view(-1))
        logits = stepper.step(running[:, :, cur].reshape(-1))

    length = prompt_len + int(finished_len[:, 0].max())
    return finished[:, 0, :length]


def _best_continuations(totals: torch.Tensor, keep: int, sample: bool, generator: torch.Generator | None):
    """(B, K*V) accumulated log-probs -> the `keep` best (or sampled) continuations, best first."""
    if not sample:
        return torch.topk(totals, k=keep)
    index = torch.multinomial(totals.softmax(dim=-1), keep, generator=generator)  # (B, keep)
    scores, order = totals.gather(1, index).sort(dim=-1, descending=True)
    return scores, index.gather(1, order)


def _may_improve(running_scores: torch.Tensor, finished_scores: torch.Tensor, finished_flag: torch.Tensor,
                 generated: int, max_generated: int, options: GenerationOptions) -> torch.Tensor:
    """(B, 1): could the best running beam still beat the worst finished hypothesis? With
    early_stopping="never" and a positive length penalty, judge it at the longest possible length."""
    length = max_generated if (options.early_stopping == "never" and options.length_penalty > 0.0) else generated
    best_possible = running_scores[:, :1] / (length ** options.length_penalty)  # (B, 1)
    worst = torch.where(finished_flag, finished_scores.min(dim=1, keepdim=True).values, NEG)  # (B, K)
    return (best_possible > worst).any(dim=-1, keepdim=True)
