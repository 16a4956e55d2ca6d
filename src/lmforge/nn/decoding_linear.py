"""Matrices in the layouts CPU decoding reads fastest, and the linear layer that uses them.

For one row (batch-1 decoding) a product is bound by reading the matrix; CPU BLAS streams a (in, out) copy
faster than the (out, in) matrix when the output is at least as wide as the input (the q, kv and up
projections, the vocabulary: 1.2-1.7x, measured on a 2-core AVX2 CPU, one thread), and reads the (out, in)
matrix faster for a narrow output (the down projection). For 2-16 rows (batched decoding, continuous batching in the server) a product with a weight matrix is
compute-bound, and oneDNN's inner-product kernel over a matrix packed ahead of time for that many rows
runs it faster than MKL's on the plain matrix (measured on a 2-core AVX2 CPU: the layers of a batch-8
decoding step 1.3-1.7x, the vocabulary projection 1.5-2x). `DecodingCopies` keeps such copies (one more
copy of the matrix in memory, per layout used), made again whenever the matrix changes. They serve decoding steps
(one new token a row): a generation's prompt of several tokens is multiplied once, by the plain matrices.
bf16 matrices take the packed layout for 1-16 rows on a CPU with bf16 units (AVX512-BF16, AMX): oneDNN's bf16
kernel over a packed matrix reads 14-19 GB/s of bf16 weights at 1-4 rows where the plain and transposed
matrices give 7-10 (measured on a 2-core AMD EPYC with AVX512-BF16, one thread, gpt2's matrices); without bf16
units torch emulates bf16 and the plain matrix serves.
`lmforge.models.cpu_decoding` uses them for the LM head; `DecodingLinear` for every projection inside the blocks.
Compiled decoding (`lmforge.infer.compiled`) multiplies one float32 or bf16 row by a block's matrix as a product
and a sum (`streamed_row_product`), which inductor turns into one vectorized loop over the (out, in) matrix, fused
with the ops around it: 15-20 GB/s on gpt2's and the 6x384 model's block matrices where BLAS reads the
transposed copy at 10-14 (measured on a 2-core AMD EPYC, one thread; a compiled step 1.1-1.3x faster at gpt2
and SmolLM2-135M shapes). The LM head keeps its transposed copy: in that loop inductor recomputes the final
norm once per vocabulary row (16-17 GB/s at 50257 x 384, where BLAS reads the copy at 21).
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import cpu_has_bf16_units
from .numbered import Numbered


_DECODING = contextvars.ContextVar("lmforge_decoding", default=False)  # inside `decoding_products()`
_ONE_ROW_COPIES = contextvars.ContextVar("lmforge_one_row_copies", default=True)  # see `decoding_products`
# torch.compile cannot read a ContextVar: code it traces reads this flag instead (see `compiled_decoding_products`)
_COMPILED_DECODING = False
# one row in compiled code: `streamed_row_product`. A bf16 row is first copied opaquely (`opaque_copy`): inlined,
# the ops that made it cost more than the loop saves over oneDNN's packed bf16 kernel; with the copy a compiled
# bf16 step is 1.18x (6x384), 1.39x (gpt2) and 1.30x (SmolLM2-135M shape) faster (AVX512-BF16, one thread).
# A float32 row gains nothing from the copy (0.94-1.04x).
STREAMED_DTYPES = (torch.float32, torch.bfloat16)
MAX_FAST_ROWS = 16  # beyond this many rows, the ordinary F.linear is as fast; the packed layout is made for it


def packing_available() -> bool:
    """Whether this torch build can pack a matrix for oneDNN's inner-product kernel (the op inductor uses)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


# read once: compiled decoding traces `decoding_layout_for`, and these probes would break its graph
BF16_UNITS, PACKING = cpu_has_bf16_units(), packing_available()


def decoding_layout_for(rows: int, dtype: torch.dtype, wide_output: bool) -> str | None:
    """The layout a product of `rows` CPU rows by a `dtype` matrix reads fastest: "transposed" (one float32 or
    float64 row into an output at least as wide as the input: `wide_output`), "packed" (2-16 float32 rows; 1-16
    bf16 rows where the CPU has bf16 units) or None (the plain matrix, through F.linear)."""
    if rows > MAX_FAST_ROWS:
        return None
    if dtype == torch.bfloat16 and BF16_UNITS:
        return "packed" if PACKING else None
    if dtype in (torch.bfloat16, torch.float16):
        return None
    if rows == 1:
        return "transposed" if wide_output else None
    return "packed" if dtype == torch.float32 and PACKING else None


def streamed_row_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                         scale: torch.Tensor | None = None) -> torch.Tensor:
    """For code torch.compile traces: x (..., in) holding one row @ weight (out, in)^T (+ bias) -> (..., out),
    written as a product and a sum over `in`, which inductor turns into one vectorized loop streaming the matrix
    once. `weight` int8 codes with their per-row `scale` (out,): the codes are converted inside that loop. A
    matrix other than float32 (bf16, int8) reads the row through `opaque_copy` (see STREAMED_DTYPES)."""
    row = x.reshape(1, -1)  # (1, in)
    if weight.dtype != torch.float32:
        row = torch.ops.lmforge.opaque_copy(row)
    out = (row.unsqueeze(-2) * weight.to(row.dtype)).sum(-1)  # (1, 1, in) * (out, in) -> (1, out)
    out = out if scale is None else out * scale
    out = out if bias is None else out + bias
    return out.reshape(*x.shape[:-1], -1)


@torch.library.custom_op("lmforge::opaque_copy", mutates_args=())
def opaque_copy(x: torch.Tensor) -> torch.Tensor:
    """A copy of `x` that inductor cannot see into: the ops that made `x` are computed once into memory instead
    of being inlined (recomputed) into every iteration of a loop that reads it, such as `streamed_row_product`'s
    over the rows of a bf16 or int8 matrix."""
    return x.clone()


@opaque_copy.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def is_packed(weight: torch.Tensor) -> bool:
    return weight.layout == torch._mkldnn


def packed_linear(flat: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """flat (rows, in) @ W^T + bias -> (rows, out), W packed by `DecodingCopies` ("packed")."""
    return torch.ops.mkldnn._linear_pointwise(flat.contiguous(), packed, bias, "none", [], "")


class DecodingCopies:
    """Detached copies of a (out, in) matrix in decoding layouts: "transposed" (in, out) or "packed" (for
    oneDNN, up to MAX_FAST_ROWS rows); kept between calls and made again whenever the matrix changes: a new
    tensor, an in-place update (its version counter), a new dtype or device."""

    def __init__(self):
        self._copies: dict[str, tuple[tuple, torch.Tensor | None]] = {}
        self.key = _COPIES.add(self)  # its number for `packed_product`

    def of(self, weight: torch.Tensor, layout: str) -> torch.Tensor | None:
        """The copy of `weight` in `layout`; None when this build cannot make it (the caller then reads `weight`).
        `weight` None, or in code torch.compile traces: the copy kept, unchecked (None if there is none)."""
        if weight is None or torch.compiler.is_compiling():  # a compiled step reads the copy an eager step made
            kept = self._copies.get(layout)
            return None if kept is None else kept[1]
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, tuple(weight.shape))
        kept = self._copies.get(layout)
        if kept is None or kept[0] != key:
            kept = (key, self._make(weight, layout))
            self._copies[layout] = kept
        return kept[1]

    @staticmethod
    def _make(weight: torch.Tensor, layout: str) -> torch.Tensor | None:
        if layout == "transposed":
            return weight.detach().t().contiguous()  # (in, out); the transpose is a slow strided copy
        try:
            return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), MAX_FAST_ROWS)
        except RuntimeError:  # a build or CPU oneDNN cannot pack for: the plain matrix serves
            return None

    def out_features(self, layout: str) -> int:
        return self._copies[layout][0][4][0]  # the kept matrix's (out, in) shape, from its key

    def clear(self) -> None:
        self._copies = {}


# torch.compile takes a packed matrix only as a frozen constant: compiled code multiplies by one through
# `lmforge::packed_product`, an operator it treats as opaque, which finds the copies by their number
_COPIES = Numbered()


@torch.library.custom_op("lmforge::packed_product", mutates_args=())
def packed_product(flat: torch.Tensor, copies: int, bias: torch.Tensor | None) -> torch.Tensor:
    """flat (rows, in) @ the packed matrix kept by the `DecodingCopies` numbered `copies` (+ bias) -> (rows, out)."""
    return packed_linear(flat, _COPIES[copies].of(None, "packed"), bias)


@packed_product.register_fake
def _(flat: torch.Tensor, copies: int, bias: torch.Tensor | None) -> torch.Tensor:
    return flat.new_empty(flat.shape[0], _COPIES[copies].out_features("packed"))


def kept_packed_product(flat: torch.Tensor, copies: DecodingCopies, bias: torch.Tensor | None = None
                        ) -> torch.Tensor | None:
    """In compiled code: flat (rows, in) @ the packed copy `copies` keeps (+ bias), or None when it keeps none."""
    if copies.of(None, "packed") is None:
        return None
    return torch.ops.lmforge.packed_product(flat.contiguous(), copies.key, bias)


@contextlib.contextmanager
def decoding_products(one_row_copies: bool = True):
    """Inside this context (a decoding loop), `DecodingLinear` layers use their decoding copies. Outside it every
    product is `F.linear`, so an encoder's or a classifier's outputs do not depend on how many rows a call has.
    `one_row_copies` False: one float32 row multiplies the plain matrix and no transposed copy is made (the eager
    step of a compiled decoding, whose compiled steps stream the plain matrix: `streamed_row_product`)."""
    token, copies_token = _DECODING.set(True), _ONE_ROW_COPIES.set(one_row_copies)
    try:
        yield
    finally:
        _ONE_ROW_COPIES.reset(copies_token)
        _DECODING.reset(token)


@contextlib.contextmanager
def compiled_decoding_products():
    """`decoding_products()` for code that torch.compile traces (a compiled decoding step): there, layers
    read only the copies an eager step under `decoding_products()` has made for the same number of rows (the
    compiled code cannot check whether they are current). Not thread-safe: a module flag, not a ContextVar."""
    global _COMPILED_DECODING
    previous, _COMPILED_DECODING = _COMPILED_DECODING, True
    try:
        yield
    finally:
        _COMPILED_DECODING = previous


def in_decoding() -> bool:
    """Whether products should use their decoding copies (inside `decoding_products()`, or its compiled form)."""
    return _COMPILED_DECODING if torch.compiler.is_compiling() else _DECODING.get()


class DecodingLinear(nn.Linear):
    """An `nn.Linear` (same parameters, same state-dict names, adapters wrap it alike) that, inside
    `decoding_products()`, multiplies 1-16 float32 (or bf16) rows on the CPU, when no gradient is needed, through
    a copy of its weight in a decoding layout (`decoding_layout_for`: transposed for one float32 row into an
    output at least as wide as the input, packed for 2-16 rows, and for 1-16 bf16 rows on a CPU with bf16
    units; in compiled code one float32 or bf16 row's product streams the weight itself: `streamed_row_product`);
    every other call is `F.linear`. A copy is made on
    the first such call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._decoding = DecodingCopies()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        rows = x.shape[:-1].numel()
        layout = None
        if in_decoding() and not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == self.weight.dtype:
            if rows == 1 and x.dtype in STREAMED_DTYPES and torch.compiler.is_compiling():
                return streamed_row_product(x, self.weight, self.bias)
            layout = decoding_layout_for(rows, x.dtype, self.out_features >= self.in_features)
            if layout == "transposed" and not _ONE_ROW_COPIES.get():
                layout = None
        if layout == "transposed":  # one streaming pass over a (in, out) copy
            transposed = self._decoding.of(self.weight, "transposed")  # (in, out)
            flat = x.reshape(1, -1)  # (1, in)
            out = flat @ transposed if self.bias is None else torch.addmm(self.bias, flat, transposed)
            return out.reshape(*x.shape[:-1], -1)
        if layout == "packed" and torch.compiler.is_compiling():
            out = kept_packed_product(x.reshape(rows, -1), self._decoding, self.bias)
            if out is not None:
                return out.reshape(*x.shape[:-1], -1)
        elif layout == "packed":
            packed = self._decoding.of(self.weight, "packed")
            if packed is not None:
                return packed_linear(x.reshape(rows, -1), packed, self.bias).reshape(*x.shape[:-1], -1)
        return F.linear(x, self.weight, self.bias)

    def _apply(self, fn, *args, **kwargs):  # .to(), .half(), .cuda(): the copy would be stale
        self._decoding.clear()
        return super()._apply(fn, *args, **kwargs)
