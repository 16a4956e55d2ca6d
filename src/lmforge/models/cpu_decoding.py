"""The CPU fast path of decoding's vocabulary projection: which matrix product turns a few hidden rows into
vocabulary logits fastest, and the copies of the output matrix in the layouts decoding reads.

For a single row, x @ W^T reads a (V, d) matrix as V short dot products, which CPU BLAS runs 1.5-4x
slower than the same product from a (d, V) copy (memory-bound at full bandwidth); one-token decoding
is dominated by it. For 2-16 rows the packed layout of `lmforge.nn.decoding_linear` serves (as it does for
the blocks' projections); each row's logits are the same whatever the number of rows, so greedy output
does not depend on what else is in a batch. `KVCache.output_weight` carries the copy through one generation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..nn.decoding_linear import (MAX_FAST_ROWS, DecodingCopies, decoding_layout_for, is_packed,
                                  kept_packed_product, packed_linear, packing_available)

__all__ = ["MAX_FAST_ROWS", "DecodingCopies", "decoding_layout", "is_packed", "packing_available", "project"]
HALF_DTYPES = (torch.bfloat16, torch.float16)  # the plain matrix unless a decoding layout was made (bf16 units)


def decoding_layout(batch: int, device: torch.device, dtype: torch.dtype) -> str | None:
    """The layout of the output matrix a generation of `batch` rows on `device` should carry:
    "transposed" (one float32 row), "packed" (2-16 float32 rows, 1-16 bf16 rows on a CPU with bf16 units,
    where oneDNN is available) or None (the plain matrix; see `decoding_layout_for`)."""
    if device.type != "cpu":
        return None
    return decoding_layout_for(batch, dtype, wide_output=True)  # the vocabulary is wider than the model


def project(hidden: torch.Tensor, weight: torch.Tensor, decoding: torch.Tensor | None = None,
            copies: DecodingCopies | None = None) -> torch.Tensor:
    """hidden (B, T, d) @ weight (V, d)^T -> (B, T, V), with the product CPU BLAS runs fastest for the
    number of rows when no gradient is needed. `decoding`: the matrix in a decoding layout (see
    `DecodingCopies`): (d, V) transposed, or packed for oneDNN; `copies`: the `DecodingCopies` that made it."""
    rows = hidden.shape[:-1].numel()
    if (torch.is_grad_enabled() or hidden.device.type != "cpu" or rows > MAX_FAST_ROWS
            or (weight.dtype in HALF_DTYPES and decoding is None)):
        return F.linear(hidden, weight)
    flat = hidden.reshape(rows, -1)  # (rows, d)
    compiling = torch.compiler.is_compiling()
    # a traced copy has lost its packed layout (it would read as a (V, d) matrix): compiled code decides it again
    packed = decoding is not None and (decoding_layout(rows, hidden.device, weight.dtype) == "packed" if compiling
                                       else is_packed(decoding))
    if packed:
        if compiling:  # the packed matrix is no input of compiled code: the copies keep it
            out = None if copies is None else kept_packed_product(flat, copies)
            if out is not None:
                return out.reshape(*hidden.shape[:-1], -1)
        else:
            return packed_linear(flat, decoding).reshape(*hidden.shape[:-1], -1)  # (B, T, V)
    if decoding is not None and rows == 1:
        return hidden @ decoding  # (B, T, d) @ (d, V): one streaming pass over the matrix
    # 2-16 rows: CPU BLAS runs the tall-skinny (V, d) @ (d, rows) faster than (rows, d) @ (d, V)
    return (weight @ flat.T).T.contiguous().reshape(*hidden.shape[:-1], -1)
