"""Int8 linear layers for inference: per-output-channel symmetric weight scales, two ways to multiply.

    W (N, K) ~= q (N, K) int8 * scale (N, 1),   scale = max_k |W[n, k]| / 127,   y = (x @ q^T) * scale + b

Batch-1 decoding reads every weight once per token, so a quarter of the bytes of float32 is what makes it
faster; how fast depends on the kernel that multiplies by the int8 codes:
- weight-only (`dtype="int8"`): the activations stay float. Up to MAX_PACKED_ROWS rows use torch's CPU
  kernel for exactly this layout, `aten._weight_int8pack_mm` (activations in bfloat16, the fastest of its
  inputs); more rows (a prompt) and other devices dequantize the matrix and multiply in the activations' dtype.
  In code torch.compile traces (compiled decoding), one float32 row streams the codes instead: a product and
  a sum that inductor turns into one loop converting the codes as it reads them (`streamed_row_product`, its
  input copied opaquely first so the ops that made it are not recomputed in that loop): a compiled gpt2 step
  1.8x faster than through `_weight_int8pack_mm`, 1.5-1.7x at 6x384 and SmolLM2-135M shapes (one thread, AMD
  EPYC with AVX512).
- dynamic (`dtype="int8-dynamic"`): each row of activations is also quantized to 8 bits on the fly (its own
  scale: the row divided by its largest magnitude), and fbgemm's int8 x int8 kernel multiplies
  (`quantized.linear_dynamic`, 2-4x faster than the weight-only kernel on an AVX2 CPU). A row's result
  depends on that row only (see `dynamic_int8_matmul`), never on what else is in the batch.
The int8 layers hold buffers, not parameters: they cannot be trained.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .decoding_linear import DecodingLinear, streamed_row_product
from .numbered import Numbered

MAX_PACKED_ROWS = 16  # above this many rows, dequantize + one GEMM beats the row-wise int8 kernel on the CPU
PACKED_KERNEL = getattr(torch.ops.aten, "_weight_int8pack_mm", None)
PACKED_K_MULTIPLE = 16  # torch 2.13's CPU kernel reads out of bounds (wrong results, crashes) for other widths
DYNAMIC_KERNEL = getattr(torch.ops.quantized, "linear_dynamic", None)
if DYNAMIC_KERNEL is not None:  # the overload's C++ callable: skips ~14 us of Python checks (script-object
    DYNAMIC_KERNEL = getattr(DYNAMIC_KERNEL.default, "_op", DYNAMIC_KERNEL)  # arguments) on every call
ACTIVATIONS = ("weight-only", "dynamic")  # Int8Linear's two products (see the module docstring)
# 7-bit activation codes: fbgemm's AVX2 kernel sums pairs of u8 x s8 products in int16, which 8-bit codes can overflow
REDUCE_RANGE = True
TINY = torch.finfo(torch.float32).tiny


@functools.cache
def dynamic_available() -> bool:
    """Whether this torch build has fbgemm's dynamic int8 linear kernel (x86 CPUs)."""
    return DYNAMIC_KERNEL is not None and any(e in torch.backends.quantized.supported_engines for e in ("x86", "fbgemm"))


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float -> (q (N, K) int8 in [-127, 127], scale (N,) float32): symmetric, one scale per row
    (output channel); an all-zero row gets scale 1 (its codes are all 0)."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1) / 127.0  # (N,)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(weight / scale[:, None]).clamp_(-127, 127).to(torch.int8)  # (N, K)
    return q, scale


def int8_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
                scale_bf16: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) @ (q * scale[:, None])^T -> (..., N) in x's dtype, activations unquantized, with the fastest
    product for the number of rows, the device and the width (see PACKED_K_MULTIPLE). `scale_bf16`: `scale`
    in bfloat16 when the caller keeps it (saves a conversion per call)."""
    rows = x.shape[:-1].numel()
    flat = x.reshape(rows, x.shape[-1])  # (rows, K)
    if (PACKED_KERNEL is not None and x.device.type == "cpu" and rows <= MAX_PACKED_ROWS and not x.requires_grad
            and x.shape[-1] % PACKED_K_MULTIPLE == 0):
        scale_bf16 = scale.to(torch.bfloat16) if scale_bf16 is None else scale_bf16
        out = PACKED_KERNEL(flat.to(torch.bfloat16), q, scale_bf16)  # (rows, N) bf16
    else:
        out = F.linear(flat, q.to(x.dtype)) * scale.to(x.dtype)  # (rows, N)
    return out.to(x.dtype).reshape(*x.shape[:-1], q.shape[0])


def prepack_dynamic(q: torch.Tensor, scale: torch.Tensor):
    """fbgemm's packed form of the int8 codes q (N, K) with their per-row scales (N,), no bias."""
    zero_points = torch.zeros(q.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # the quantized-tensor constructors warn that they are deprecated
        warnings.simplefilter("ignore")
        codes = torch._make_per_channel_quantized_tensor(q.cpu(), scale.double().cpu(), zero_points, 0)
        return torch.ops.quantized.linear_prepack(codes, None)


# torch.compile cannot trace fbgemm's packed weights (a script object): compiled code calls the kernel through
# `lmforge::int8_dynamic_product`, an operator it treats as opaque, which finds the layer by a number
_DYNAMIC_LAYERS = Numbered()


@torch.library.custom_op("lmforge::int8_dynamic_product", mutates_args=())
def int8_dynamic_product(unit: torch.Tensor, layer: int) -> torch.Tensor:
    """unit (rows, K) float32 @ the int8 matrix of the `Int8Linear` numbered `layer` -> (rows, N), through fbgemm."""
    return DYNAMIC_KERNEL(unit, _DYNAMIC_LAYERS[layer]._dynamic[0], REDUCE_RANGE)


@int8_dynamic_product.register_fake
def _(unit: torch.Tensor, layer: int) -> torch.Tensor:
    return unit.new_empty(unit.shape[0], _DYNAMIC_LAYERS[layer].out_features)


def dynamic_int8_matmul(x: torch.Tensor, packed, calibration: torch.Tensor,
                        bias: torch.Tensor | None = None, layer: int | None = None) -> torch.Tensor:
    """x (..., K) float32 @ W^T (+ bias) through fbgemm's dynamic int8 kernel, every row quantized on its own scale.

    The kernel picks one activation scale for the whole input from its minimum and maximum. Each row is
    divided by its largest magnitude (so it lies in [-1, 1]) and a calibration row (+1, -1, 0, ...), (1, K),
    is put first, so that range is always exactly [-1, 1]: every row gets the same 8-bit grid relative to its
    own size, whatever the other rows hold; the outputs are scaled back per row. Few ops: batch-1 decoding
    calls this once per linear layer per token. `layer`: the number of the `Int8Linear` holding `packed`, which
    code torch.compile traces multiplies through (`int8_dynamic_product`)."""
    rows, width = x.shape[:-1].numel(), x.shape[-1]
    flat = x.reshape(rows, width)  # (rows, K)
    peak = flat.abs().amax(dim=1, keepdim=True).clamp_min_(TINY)  # (rows, 1); 1.1-6x faster than vector_norm(inf)
    unit = torch.cat([calibration, flat / peak])  # (1 + rows, K)
    if torch.compiler.is_compiling():
        out = torch.ops.lmforge.int8_dynamic_product(unit, layer)
    else:
        out = DYNAMIC_KERNEL(unit, packed, REDUCE_RANGE)
    out = out.narrow(0, 1, rows)  # (rows, N): the calibration row dropped
    out = out * peak if bias is None else torch.addcmul(bias, out, peak)
    return out.reshape(*x.shape[:-1], out.shape[-1])


class Int8Linear(nn.Module):
    """An `nn.Linear` replacement holding int8 weights (`qweight` (out, in)), their per-row `scale`
    (out,) and the bias in the compute dtype. `activations`: "weight-only" or "dynamic" (see the module
    docstring; dynamic needs `dynamic_available()` and runs on the CPU, other devices use weight-only).
    Build it with `Int8Linear.from_linear` or `from_matrix`."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
                 activations: str = "weight-only"):
        super().__init__()
        if activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
        self.out_features, self.in_features = qweight.shape
        self.activations = activations
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.register_buffer("scale_bf16", scale.to(torch.bfloat16), persistent=False)  # the packed kernel's input
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self._dynamic = None  # (fbgemm's packed weights, calibration row), made on first use on the CPU
        self._dynamic_kernel = activations == "dynamic" and dynamic_available()
        self._key = _DYNAMIC_LAYERS.add(self)  # its number for `int8_dynamic_product`

    @classmethod
    def from_matrix(cls, weight: torch.Tensor, bias: torch.Tensor | None = None,
                    activations: str = "weight-only") -> "Int8Linear":
        """Quantize a (out, in) float matrix (and keep its bias) into a new layer."""
        q, scale = quantize_per_channel(weight)
        return cls(q.to(weight.device), scale.to(weight.device), bias, activations)

    @classmethod
    def from_linear(cls, linear: nn.Linear, activations: str = "weight-only") -> "Int8Linear":
        return cls.from_matrix(linear.weight, linear.bias, activations)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:  # (out, in)
        return self.qweight.to(dtype) * self.scale.to(dtype)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        if self._dynamic_kernel and x.device.type == "cpu" and x.dtype == torch.float32:
            if self._dynamic is None:
                calibration = torch.zeros(1, self.in_features)  # (1, K)
                calibration[0, 0], calibration[0, -1] = 1.0, -1.0
                self._dynamic = (prepack_dynamic(self.qweight, self.scale), calibration)
            return dynamic_int8_matmul(x, *self._dynamic, self.bias, self._key)
        if (x.shape[:-1].numel() == 1 and x.dtype == torch.float32 and x.device.type == "cpu"
                and torch.compiler.is_compiling()):
            return streamed_row_product(x, self.qweight, self.bias, self.scale)  # its input copied opaquely
        out = int8_matmul(x, self.qweight, self.scale, self.scale_bf16)
        if self.bias is None:
            return out
        return out + (self.bias if self.bias.dtype == out.dtype else self.bias.to(out.dtype))

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(): the packed copy would be stale
        self._dynamic = None
        return super()._apply(fn, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel, " \
               f"{self.activations} activations"


def quantize_linears(module: nn.Module, activations: str = "weight-only") -> int:
    """Replace every `nn.Linear` under `module` (in place) by an `Int8Linear`; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if type(child) in (nn.Linear, DecodingLinear):
            setattr(module, name, Int8Linear.from_linear(child, activations))
            count += 1
        else:
            count += quantize_linears(child, activations)
    return count


def has_int8_weights(module: nn.Module) -> bool:
    """Whether any layer under `module` holds int8 weights (such a model is for inference only)."""
    return any(isinstance(m, Int8Linear) for m in module.modules())


def int8_activations(module: nn.Module) -> str | None:
    """How the int8 layers under `module` treat activations ("weight-only" or "dynamic"), None without any."""
    return next((m.activations for m in module.modules() if isinstance(m, Int8Linear)), None)
