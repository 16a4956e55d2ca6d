"""A compiled decoding step: torch.compile of one new token per row over a static KV cache.

At small sizes a decoding step spends much of its time outside the matrix products: hundreds of small ops
(norms, attention, reshapes, adds), each dispatched from Python. Compiling the step fuses them. The prompt
runs eagerly (`DecoderOnlyStepper.prefill`); the cache then turns static (`KVCache.start_static`: the write
slot, the positions and the attention mask are tensors updated in place, attention reads all `max_len`
slots), so every later step has the same shapes and reads no changing Python number: one compilation per
model, batch size and cache length (kept for the process; torch's inductor also caches compiled code on disk,
so a later process compiles the same step faster), none per step. The first step after the
prompt runs eagerly: it makes the decoding copies of the weights (`nn.decoding_linear`) the compiled code reads
(packed ones for 2-16 rows and for bf16; one float32 row needs none: its compiled products stream the weights).

When compiling fails (no C++ compiler, an op the compiler cannot handle) one warning says so and the steps run
the same function eagerly: the same tokens at eager speed. Models the static cache does not cover
(encoder-decoders, relative position biases) decode eagerly after one warning.
"""

from __future__ import annotations

import contextlib
import itertools
import types
import warnings
import weakref

import torch

from ..errors import InputError
from ..nn.decoding_linear import compiled_decoding_products, decoding_products
from .steppers import DecoderOnlyStepper, check_generating_head, make_stepper

_compiled: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> (its module types, its compiled step)
_count = itertools.count()


def _decode_step(model, ids: torch.Tensor, cache) -> torch.Tensor:  # (B, 1) -> (B, V): what torch.compile traces
    return model.decode_step(ids, cache)


def compiled_decode_step(model):
    """`model`'s compiled decoding step (None once compiling it has failed): a copy of `_decode_step` of its own (torch keeps compilations per code
    object, so these are this model's only: one per batch size and cache length), compiled without the guards on
    the module tree, which cost ~1 ms a call on a 12-layer model (the tensors' guards stay: new weights of the same
    shapes are read, other shapes recompile). On the CPU its wrapper is C++ (inductor's `cpp_wrapper`): the
    step's ~100 kernel calls are not made from Python (measured 1.04x faster a step at gpt2 size, one thread;
    compiling takes longer). A model whose module types change (converted to another weight
    format in place, given adapters) gets a new copy."""
    signature = tuple(type(module) for module in model.modules())
    kept = _compiled.get(model)
    if kept is None or kept[0] != signature:
        code = _decode_step.__code__.replace(co_name=f"_decode_step_{next(_count)}")
        step = types.FunctionType(code, _decode_step.__globals__, code.co_name)
        with _warnings_ignored():  # the compiler's modules, imported now, warn of deprecations inside torch
            options = {"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe,
                       "cpp_wrapper": model.device.type == "cpu"}  # a CPU step calls its kernels from C++
            kept = (signature, torch.compile(step, dynamic=False, options=options))
        _compiled[model] = kept
    return kept[1]


def compile_problem(model) -> str | None:
    """Why decoding `model` cannot be compiled here, or None."""
    config = model.config
    if config.is_encoder_decoder:
        return "compiled decoding covers decoder-only models"
    if config.positions == "relative":
        return "compiled decoding does not cover relative position biases"
    return None


class CompiledDecoderStepper(DecoderOnlyStepper):
    """A decoder-only stepper whose steps after the first run one compiled function over a static cache."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.compiled = compiled_decode_step(self.model)
        if self.compiled is None:
            warnings.warn("compiling this model's decoding step failed earlier in this process; decoding eagerly",
                          stacklevel=4)
        self.eager_steps = 0  # steps run eagerly so far (the first makes the decoding copies of the weights)
        self.compiled_calls = 0

    def prefill(self) -> torch.Tensor:
        logits = super().prefill()  # (B, V), eagerly over the prompt
        self.cache.start_static(None if self.mask is None else self.mask[:, :self.length])
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, V)
        ids = tokens[:, None]  # (B, 1)
        self.length += 1
        if self.compiled is not None and self.eager_steps > 0:
            try:
                with decoding_products(), compiled_decoding_products(), self._compiler_quiet():
                    return self.compiled(self.model, ids, self.cache)
            except Exception as error:  # the compiler's failures have many types; none has run the step
                message = str(error).strip().splitlines()[0] if str(error).strip() else ""
                warnings.warn(f"compiling the decoding step failed ({type(error).__name__}: {message[:200]}); "
                              "decoding eagerly (the same tokens, slower)", stacklevel=2)
                self.compiled = None
                _compiled[self.model] = (_compiled[self.model][0], None)  # not tried again for this model
        self.eager_steps += 1
        with decoding_products(one_row_copies=self.compiled is None):  # compiled steps read no transposed copy
            return self.model.decode_step(ids, self.cache)

    def _compiler_quiet(self):
        """Around a stepper's first compiled call, where torch compiles if it does: the compiler's own warnings
        (deprecations inside torch) are not the caller's business; the step itself warns of nothing."""
        self.compiled_calls += 1
        return _warnings_ignored() if self.compiled_calls == 1 else contextlib.nullcontext()

    def expand(self, index: torch.Tensor) -> None:
        """Beam search reorders the cache's rows; a static cache keeps its own (`GenerationOptions` refuses
        compile with num_beams > 1, so only a direct caller gets here)."""
        raise InputError("compile works with greedy decoding and sampling, not beam search; decode with "
                         "num_beams=1 or leave compile off")


def make_compiled_stepper(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_new_tokens: int):
    """A `CompiledDecoderStepper`, or, for a model it does not cover, the eager stepper after one warning."""
    check_generating_head(model)
    problem = compile_problem(model)
    if problem is not None:
        warnings.warn(f"{problem}; decoding eagerly", stacklevel=3)
        return make_stepper(model, input_ids, attention_mask, max_new_tokens)
    return CompiledDecoderStepper(model, input_ids, attention_mask, max_new_tokens)


@contextlib.contextmanager
def _warnings_ignored():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
