"""Text generation with a KV cache: greedy, sampling (temperature, top-k, top-p), beam search.

`generate(model, input_ids, attention_mask, max_new_tokens=..., ...)` returns token ids like
Hugging Face's `generate`: the prompt followed by the new tokens for decoder-only models, the
decoder start token followed by the new tokens for encoder-decoders; rows that finished early are
filled with the pad token. `stream(...)` yields the new tokens (B,) step by step.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from ..config import first_id
from ..errors import InputError
from ..models import services
from .beam import beam_search
from .compiled import make_compiled_stepper
from .logits import apply_processors, build_processors
from .options import GenerationOptions
from .steppers import make_stepper


def generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
             options: GenerationOptions | None = None, **overrides) -> torch.Tensor:
    """Generate up to `max_new_tokens` tokens after each (left-padded) prompt / for each source.

    input_ids (B, P) and attention_mask (B, P) with 1 for real tokens. Options: see
    `GenerationOptions` (keyword arguments override `options`). Returns (B, start + new) ids."""
    options = GenerationOptions.make(options, **overrides)
    run = _Run(model, input_ids, attention_mask, options)
    with eval_mode(model), torch.inference_mode():
        if options.num_beams > 1:
            return beam_search(run.stepper, run.sequence, run.prompt_len, run.history, run.processors,
                               options, run.stop_ids, run.pad_id, run.generator)
        for _ in run.tokens():
            pass
        return run.sequence[:, :run.length]


services.register("generate", generate)  # LmforgeModel.generate


def stream(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
           options: GenerationOptions | None = None, **overrides) -> Iterator[torch.Tensor]:
    """Like `generate` (greedy or sampling), but yield each step's new tokens (B,) as soon as they exist.
    Rows that have finished yield the pad token. Beam search cannot stream (its best sequence is
    only known at the end). Bad options raise here, before the first token."""
    options = GenerationOptions.make(options, **overrides)
    if options.num_beams > 1:
        raise InputError("beam search cannot stream tokens (the best beam is known only at the end); "
                         "use num_beams=1 to stream, or call generate()")
    return _stream(model, _Run(model, input_ids, attention_mask, options))


def _stream(model, run: "_Run") -> Iterator[torch.Tensor]:
    """Run the decoding steps in eval and inference mode, but hand each token over outside them, so
    the caller's own code between tokens runs in its usual mode."""
    with eval_mode(model):
        steps = run.tokens()
        while True:
            with torch.inference_mode():
                new = next(steps, None)
            if new is None:
                return
            yield new


@contextmanager
def eval_mode(model):
    """No dropout while decoding; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class _Run:
    """The state of one greedy/sampling generation: the stepper, preallocated sequence buffers, the
    processors and the stop tokens."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 options: GenerationOptions):
        _check_prompt(model, input_ids, attention_mask, options)
        config = model.config
        self.options = options
        self.stop_ids = options.stop_ids(config.eos_token_id)
        # the slots after a row's stop token: the pad, else the stop token (`config.padding_id`'s order); with
        # neither, no row can stop early, so no slot past a row's end is ever written or returned
        self.pad_id = first_id(options.pad_token_id, config.pad_token_id, *self.stop_ids)
        self.stepper = make_compiled_stepper(model, input_ids, attention_mask, options.max_new_tokens) \
            if options.compile else make_stepper(model, input_ids, attention_mask, options.max_new_tokens, options.use_cache)
        start = self.stepper.start  # (B, P): the prompt, or the decoder start token
        batch, self.prompt_len = start.shape
        total = self.prompt_len + options.max_new_tokens
        self.sequence = start.new_empty((batch, total)) if self.pad_id is None else \
            start.new_full((batch, total), self.pad_id)  # (B, L)
        self.sequence[:, :self.prompt_len] = start
        self.length = self.prompt_len
        self.processors = build_processors(options, len(self.stop_ids))
        self.history = None  # (B, L) ids for the repetition penalty; vocab_size marks prompt padding
        if options.repetition_penalty != 1.0:
            self.history = self.sequence.clone()
            if self.stepper.prompt_mask is not None:
                self.history[:, :self.prompt_len].masked_fill_(self.stepper.prompt_mask == 0, config.vocab_size)
        self.generator = None
        if options.seed is not None:
            self.generator = torch.Generator(device=start.device).manual_seed(options.seed)

    def tokens(self) -> Iterator[torch.Tensor]:
        """Decode step by step, yielding the new tokens (B,); stops when every row has hit a stop token."""
        stop = torch.tensor(self.stop_ids, dtype=torch.long, device=self.sequence.device)
        batch = self.sequence.shape[0]
        unfinished = torch.ones(batch, dtype=torch.bool, device=self.sequence.device)  # (B,)
        some_finished = False  # known on the host, so rows are masked only once one has stopped
        logits = self.stepper.prefill()  # (B, V)
        for step in range(self.options.max_new_tokens):
            scores = logits
            if self.processors:
                scores = apply_processors(self.processors, self._history(), scores)
            new = self._pick(scores)  # (B,)
            if some_finished:
                new = torch.where(unfinished, new, self.pad_id)
            self.sequence[:, self.length] = new
            if self.history is not None:
                self.history[:, self.length] = new
            self.length += 1
            yield new
            if len(self.stop_ids):
                unfinished &= ~torch.isin(new, stop)
                running = int(unfinished.sum())  # the one host sync per step
                if running == 0:
                    return
                some_finished = running < batch
            if step + 1 < self.options.max_new_tokens:
                logits = self.stepper.step(new)

    def _history(self) -> torch.Tensor:
        return self.history[:, :self.length] if self.history is not None else self.sequence[:, :self.length]

    def _pick(self, scores: torch.Tensor) -> torch.Tensor:  # (B, V) -> (B,)
        if not self.options.do_sample:
            return scores.argmax(dim=-1)
        probs = scores.softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(1)


def _check_prompt(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  options: GenerationOptions) -> None:
    """Clear errors for empty prompts, mismatched masks and outputs longer than the model's positions."""
    if input_ids.dim() != 2 or input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
        raise InputError(f"input_ids must be a non-empty (batch, length) tensor, got shape {tuple(input_ids.shape)}; "
                         "give at least one token per prompt (e.g. the BOS token)")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise InputError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                         f"{tuple(input_ids.shape)}; they must match")
    config = model.config
    if not config.positions_bounded:
        return  # relative positions set no hard limit
    if config.is_encoder_decoder:
        needed, what = 1 + options.max_new_tokens, "the decoder start token +"
    else:
        needed, what = input_ids.shape[1] + options.max_new_tokens, f"{input_ids.shape[1]} prompt tokens +"
    if needed > config.max_positions:
        raise InputError(f"{what} {options.max_new_tokens} new tokens exceed the model's {config.max_positions} "
                         "positions; shorten the prompt or lower max_new_tokens")
