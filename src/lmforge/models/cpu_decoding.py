"""The CPU fast path of decoding, in one place: which matrix product turns a few hidden rows into
vocabulary logits fastest, and the transposed copy of the output matrix that one-row decoding reads.

For a single row, x @ W^T reads a (V, d) matrix as V short dot products, which CPU BLAS runs 1.5-4x
slower than the same product from a (d, V) copy (memory-bound at full bandwidth); one-token decoding
is dominated by it. `KVCache.output_weight` carries that copy through one generation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_FAST_ROWS = 16  # beyond this many rows, the ordinary F.linear is as fast
HALF_DTYPES = (torch.bfloat16, torch.float16)  # CPU BLAS runs these many times slower from the other layouts


def wants_transposed_copy(batch: int, device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Whether a generation of `batch` rows on `device` should carry the (d, V) copy (not for bf16/fp16:
    CPU BLAS multiplies them from the transposed layout many times slower)."""
    return batch == 1 and device.type == "cpu" and dtype not in HALF_DTYPES


def project(hidden: torch.Tensor, weight: torch.Tensor, transposed: torch.Tensor | None = None) -> torch.Tensor:
    """hidden (B, T, d) @ weight (V, d)^T -> (B, T, V), with the product CPU BLAS runs fastest for the
    number of rows when no gradient is needed. `transposed`: weight laid out (d, V) (see `TransposedCopy`)."""
    rows = hidden.shape[:-1].numel()
    if torch.is_grad_enabled() or hidden.device.type != "cpu" or rows > MAX_FAST_ROWS or weight.dtype in HALF_DTYPES:
        return F.linear(hidden, weight)
    if transposed is not None and rows == 1:
        return hidden @ transposed  # (B, T, d) @ (d, V): one streaming pass over the matrix
    # 2-16 rows: CPU BLAS runs the tall-skinny (V, d) @ (d, rows) faster than (rows, d) @ (d, V)
    flat = hidden.reshape(rows, -1)  # (rows, d)
    return (weight @ flat.T).T.contiguous().reshape(*hidden.shape[:-1], -1)


class TransposedCopy:
    """A detached (d, V) contiguous copy of a (V, d) matrix, kept between generations (one more V x d
    matrix in memory) and made again whenever the matrix changes: a new tensor, an in-place update
    (its version counter), a new dtype or device."""

    def __init__(self):
        self._key: tuple | None = None
        self._copy: torch.Tensor | None = None

    def of(self, weight: torch.Tensor) -> torch.Tensor:
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, tuple(weight.shape))
        if self._copy is None or self._key != key:
            self._key, self._copy = key, weight.detach().t().contiguous()  # the transpose is a slow strided copy
        return self._copy

    def clear(self) -> None:
        self._key = self._copy = None
