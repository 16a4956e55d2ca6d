"""The CPU fast path of decoding, in one place: which matrix product turns a few hidden rows into
vocabulary logits fastest, and the copies of the output matrix in the layouts decoding reads.

For a single row, x @ W^T reads a (V, d) matrix as V short dot products, which CPU BLAS runs 1.5-4x
slower than the same product from a (d, V) copy (memory-bound at full bandwidth); one-token decoding
is dominated by it. For 2-16 rows (batched decoding, continuous batching in the server) the product is
compute-bound, and oneDNN's kernel over a matrix packed ahead of time for that many rows runs it 1.5-2x
faster than MKL's on the plain matrix; each row's logits are the same whatever the number of rows, so
greedy output does not depend on what else is in a batch. `KVCache.output_weight` carries the copy
through one generation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_FAST_ROWS = 16  # beyond this many rows, the ordinary F.linear is as fast; the packed layout is made for it
HALF_DTYPES = (torch.bfloat16, torch.float16)  # CPU BLAS runs these many times slower from the other layouts


def packing_available() -> bool:
    """Whether this torch build can pack a matrix for oneDNN's inner-product kernel (the op inductor uses)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def decoding_layout(batch: int, device: torch.device, dtype: torch.dtype) -> str | None:
    """The layout of the output matrix a generation of `batch` rows on `device` should carry:
    "transposed" (one row), "packed" (2-16 float32 rows, where oneDNN is available) or None (the plain matrix;
    always for bf16/fp16, which CPU BLAS multiplies many times slower from the other layouts)."""
    if device.type != "cpu" or dtype in HALF_DTYPES:
        return None
    if batch == 1:
        return "transposed"
    if batch <= MAX_FAST_ROWS and dtype == torch.float32 and packing_available():
        return "packed"
    return None


def is_packed(weight: torch.Tensor) -> bool:
    return weight.layout == torch._mkldnn


def project(hidden: torch.Tensor, weight: torch.Tensor, decoding: torch.Tensor | None = None) -> torch.Tensor:
    """hidden (B, T, d) @ weight (V, d)^T -> (B, T, V), with the product CPU BLAS runs fastest for the
    number of rows when no gradient is needed. `decoding`: the matrix in a decoding layout (see
    `DecodingCopies`): (d, V) transposed, or packed for oneDNN."""
    rows = hidden.shape[:-1].numel()
    if torch.is_grad_enabled() or hidden.device.type != "cpu" or rows > MAX_FAST_ROWS or weight.dtype in HALF_DTYPES:
        return F.linear(hidden, weight)
    flat = hidden.reshape(rows, -1)  # (rows, d)
    if decoding is not None and is_packed(decoding):
        out = torch.ops.mkldnn._linear_pointwise(flat.contiguous(), decoding, None, "none", [], "")  # (rows, V)
        return out.reshape(*hidden.shape[:-1], -1)
    if decoding is not None and rows == 1:
        return hidden @ decoding  # (B, T, d) @ (d, V): one streaming pass over the matrix
    # 2-16 rows: CPU BLAS runs the tall-skinny (V, d) @ (d, rows) faster than (rows, d) @ (d, V)
    return (weight @ flat.T).T.contiguous().reshape(*hidden.shape[:-1], -1)


def _packed(weight: torch.Tensor) -> torch.Tensor:
    """(V, d) -> the same matrix packed by oneDNN for products with up to MAX_FAST_ROWS rows."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), MAX_FAST_ROWS)


class DecodingCopies:
    """Detached copies of a (V, d) matrix in decoding layouts (`decoding_layout`), kept between
    generations (one more V x d matrix in memory per layout used) and made again whenever the matrix
    changes: a new tensor, an in-place update (its version counter), a new dtype or device."""

    def __init__(self):
        self._copies: dict[str, tuple[tuple, torch.Tensor | None]] = {}

    def of(self, weight: torch.Tensor, layout: str) -> torch.Tensor | None:
        """The copy of `weight` in `layout`; None when this build cannot make it (decoding then reads `weight`)."""
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, tuple(weight.shape))
        kept = self._copies.get(layout)
        if kept is None or kept[0] != key:
            kept = (key, self._make(weight, layout))
            self._copies[layout] = kept
        return kept[1]

    @staticmethod
    def _make(weight: torch.Tensor, layout: str) -> torch.Tensor | None:
        if layout == "transposed":
            return weight.detach().t().contiguous()  # (d, V); the transpose is a slow strided copy
        try:
            return _packed(weight)
        except RuntimeError:  # a build or CPU oneDNN cannot pack for: the plain matrix serves
            return None

    def clear(self) -> None:
        self._copies = {}
