"""Decoding options for `generate`, checked once before any model call."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import InputError


@dataclass
class GenerationOptions:
    """How to pick tokens. The defaults give greedy decoding of up to 20 new tokens.

    do_sample: draw tokens from the (processed) distribution instead of taking the best one.
    temperature, top_k (0 = off), top_p (1.0 = off): reshape the distribution before sampling.
    num_beams > 1: beam search, scored by sum of log-probabilities / generated_length ** length_penalty;
    early_stopping: True stops a batch row as soon as `num_beams` hypotheses are finished, False stops
    when the best running beam (at its current length) cannot beat the worst finished one, "never"
    when it cannot beat it at any length (Hugging Face's three settings).
    repetition_penalty > 1 makes tokens already in the sequence (prompt included, padding excluded)
    less likely. eos_token_id: the token(s) that end a sequence (default: the model's EOS);
    stop_token_ids: more tokens that end a sequence. pad_token_id fills finished rows (default: the
    model's pad, else the EOS). seed makes sampling reproducible. use_cache=False recomputes the whole
    sequence at every step instead of reading the KV cache (slow; for checking). compile=True runs every
    decoding step after the first through torch.compile over a static cache (`lmforge.infer.compiled`:
    greedy and sampling, decoder-only models; the first call for a batch size and length compiles, which takes
    a while; when compiling fails, one warning and eager decoding, same tokens).
    """

    max_new_tokens: int = 20
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    repetition_penalty: float = 1.0
    eos_token_id: int | list[int] | None = None
    stop_token_ids: list[int] | None = None
    pad_token_id: int | None = None
    seed: int | None = None
    use_cache: bool = True
    compile: bool = False

    @classmethod
    def make(cls, options: "GenerationOptions | None" = None, **overrides) -> "GenerationOptions":
        """Options from an existing object and/or keyword arguments; unknown names are an `InputError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputError(f"unknown generation option(s) {', '.join(unknown)}; valid options are: "
                             f"{', '.join(sorted(known))}")
        base = options if options is not None else cls()
        return dataclasses.replace(base, **overrides).validate()

    def validate(self) -> "GenerationOptions":
        """Raise `InputError` naming the option and its allowed range. Returns self."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise InputError(message)

        need(isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
             f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        need(isinstance(self.num_beams, int) and self.num_beams >= 1,
             f"num_beams must be an integer >= 1 (1 = no beam search), got {self.num_beams!r}")
        need(0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1] (1 = off), got {self.top_p!r}")
        need(isinstance(self.top_k, int) and self.top_k >= 0, f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        need(self.temperature > 0.0, f"temperature must be > 0, got {self.temperature!r}; for greedy decoding use do_sample=False (on the command line: leave out --sample)")
        need(self.repetition_penalty > 0.0, f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty!r}")
        need(self.early_stopping in (True, False, "never"),
             f"early_stopping must be true, false or 'never', got {self.early_stopping!r}")
        need(not (self.compile and self.num_beams > 1),
             "compile works with greedy decoding and sampling, not beam search; use num_beams=1 or leave compile off "
             "(on the command line: drop --compile or --num-beams)")
        need(not (self.compile and not self.use_cache), "compile needs the KV cache; leave use_cache on")
        return self

    def stop_ids(self, model_eos: int | None) -> list[int]:
        """Every token id that ends a sequence: the EOS token(s) (default: the model's) plus stop tokens."""
        eos = self.eos_token_id if self.eos_token_id is not None else model_eos
        ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        return ids + [t for t in (self.stop_token_ids or []) if t not in ids]
