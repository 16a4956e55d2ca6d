"""Weight-only int8 linear layers for inference: per-output-channel symmetric scales.

    W (N, K) ~= q (N, K) int8 * scale (N, 1),   scale = max_k |W[n, k]| / 127,   y = (x @ q^T) * scale + b

Batch-1 decoding reads every weight once per token, so a quarter of the bytes of float32 is what makes it
faster. The product of a few rows uses torch's CPU kernel for exactly this layout,
`aten._weight_int8pack_mm` (activations in bfloat16, the fastest of its inputs; measured in
`bench/generate.py`); many rows (a prompt) and other devices dequantize the matrix and multiply in the
activations' dtype. The int8 layers hold buffers, not parameters: they cannot be trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MAX_PACKED_ROWS = 8  # above this many rows, dequantize + one GEMM beats the row-wise int8 kernel on the CPU
PACKED_KERNEL = getattr(torch.ops.aten, "_weight_int8pack_mm", None)
PACKED_K_MULTIPLE = 16  # torch 2.13's CPU kernel reads out of bounds (wrong results, crashes) for other widths


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float -> (q (N, K) int8 in [-127, 127], scale (N,) float32): symmetric, one scale per row
    (output channel); an all-zero row gets scale 1 (its codes are all 0)."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1) / 127.0  # (N,)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(weight / scale[:, None]).clamp_(-127, 127).to(torch.int8)  # (N, K)
    return q, scale


def int8_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (..., K) @ (q * scale[:, None])^T -> (..., N) in x's dtype, with the fastest product for the
    number of rows, the device and the width (see PACKED_K_MULTIPLE)."""
    rows = x.shape[:-1].numel()
    flat = x.reshape(rows, x.shape[-1])  # (rows, K)
    if (PACKED_KERNEL is not None and x.device.type == "cpu" and rows <= MAX_PACKED_ROWS and not x.requires_grad
            and x.shape[-1] % PACKED_K_MULTIPLE == 0):
        out = PACKED_KERNEL(flat.to(torch.bfloat16), q, scale.to(torch.bfloat16))  # (rows, N) bf16
    else:
        out = F.linear(flat, q.to(x.dtype)) * scale.to(x.dtype)  # (rows, N)
    return out.to(x.dtype).reshape(*x.shape[:-1], q.shape[0])


class Int8Linear(nn.Module):
    """An `nn.Linear` replacement holding int8 weights (`qweight` (out, in)), their per-row `scale`
    (out,) and the bias in the compute dtype. Build it with `Int8Linear.from_linear` or `from_matrix`."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_matrix(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> "Int8Linear":
        """Quantize a (out, in) float matrix (and keep its bias) into a new layer."""
        q, scale = quantize_per_channel(weight)
        return cls(q.to(weight.device), scale.to(weight.device), bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        return cls.from_matrix(linear.weight, linear.bias)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:  # (out, in)
        return self.qweight.to(dtype) * self.scale.to(dtype)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        out = int8_matmul(x, self.qweight, self.scale)
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


def quantize_linears(module: nn.Module) -> int:
    """Replace every `nn.Linear` under `module` (in place) by an `Int8Linear`; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if type(child) is nn.Linear:
            setattr(module, name, Int8Linear.from_linear(child))
            count += 1
        else:
            count += quantize_linears(child)
    return count


def has_int8_weights(module: nn.Module) -> bool:
    """Whether any layer under `module` holds int8 weights (such a model is for inference only)."""
    return any(isinstance(m, Int8Linear) for m in module.modules())
