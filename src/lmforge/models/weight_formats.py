"""Weight formats for inference: a loaded model turned into bf16 (or fp16) or weight-only int8.

`WEIGHT_DTYPES` is the one registry of the names (`lmforge.load(..., dtype=)`, `--dtype`):
- fp32: as trained;
- bf16: every weight in bfloat16 and the computation too (norms take their statistics in float32,
  attention's softmax accumulates in float32 inside the kernel); logits come back as float32;
- fp16: float16 weights, CUDA only;
- int8: every linear layer's weight quantized per output channel (`nn.quantized.Int8Linear`), the LM
  head's output matrix too (tied to the embedding or not: with a 50k vocabulary it is a large share of
  a small model's bytes); activations stay float32 between layers. Self-attention's q and kv layers are
  fused into one (`Attention.fuse_projections`) before quantizing: one product per layer instead of two. The token embedding table stays
  float32: a lookup reads one row per token, so quantizing it would save memory, not time.
- int8-dynamic: the same int8 weights, and each row of activations quantized to 8 bits on the fly before
  every linear layer (`Int8Linear` "dynamic"): fbgemm's int8 x int8 kernel, 2-4x faster on an x86 CPU than
  the weight-only one, at some more rounding (its quality cost: `bench/weight_formats.py`); CPU only.
An int8 model is for inference only: it cannot be trained or saved (`has_int8_weights`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..devices import half_precision_problem
from ..errors import InputError
from ..nn.attention import Attention
from ..nn.quantized import Int8Linear, dynamic_available, has_int8_weights, int8_activations, quantize_linears
from .heads import LMHead
from .lora import lora_layers, merge_and_unload

WEIGHT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8,
                 "int8-dynamic": torch.int8}
INT8_ACTIVATIONS = {"int8": "weight-only", "int8-dynamic": "dynamic"}  # the int8 formats' `Int8Linear` products
ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
INFERENCE_ONLY = "int8 is for inference only"


def weight_format_name(dtype: str | torch.dtype | None) -> str:
    """The registry name of `dtype` (a name, an alias such as "bfloat16", or a torch dtype); None is fp32.
    An unknown one is an `InputError` naming the known ones."""
    if dtype is None:
        return "fp32"
    if isinstance(dtype, torch.dtype):
        names = [name for name, known in WEIGHT_DTYPES.items() if known == dtype]
        if names:
            return names[0]
    elif isinstance(dtype, str):
        name = ALIASES.get(dtype.lower(), dtype.lower())
        if name in WEIGHT_DTYPES:
            return name
    raise InputError(f"unknown weight dtype {dtype!r}; choose one of: {', '.join(WEIGHT_DTYPES)}")


def check_device_runs(name: str, device: torch.device | str) -> None:
    """Refuse a weight format the device cannot compute in."""
    device = torch.device(device)
    problem = half_precision_problem(name, device)
    if problem is not None:
        other = "bf16 or int8" if name == "fp16" else "fp16 or int8"
        raise InputError(f"dtype {problem}; use --dtype {other} or fp32")
    if name == "int8-dynamic" and (device.type != "cpu" or not dynamic_available()):
        raise InputError("dtype int8-dynamic needs fbgemm's int8 kernels on an x86 CPU; use int8 (weight-only) here")


def check_finite(model: nn.Module) -> None:
    """Refuse to quantize weights holding NaN or infinite values (the scales would be meaningless),
    naming the first such tensor."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(f"cannot quantize to int8: tensor {name} holds NaN or infinite values; "
                             "repair the checkpoint or load it in fp32")


def to_weight_format(model, dtype: str | torch.dtype | None):
    """Turn a loaded float32 model into the weight format `dtype` (in place, in eval mode; returns
    the model).
    LoRA adapters are merged into their base weights before int8 quantization."""
    name = weight_format_name(dtype)
    check_device_runs(name, model.device)
    if has_int8_weights(model):
        raise InputError("the model's weights are int8 already; load the checkpoint again for another dtype")
    model.eval()  # a weight format is for inference: dropout off
    if name == "fp32":
        return model if model.dtype == torch.float32 else model.float()
    if name not in INT8_ACTIVATIONS:
        return model.to(WEIGHT_DTYPES[name])
    check_finite(model)
    if lora_layers(model):
        merge_and_unload(model)
    head = model.head
    if isinstance(head, LMHead):
        matrix = head.output_matrix(model.embed.weight)  # (V, d)
        head.quantized = Int8Linear.from_matrix(matrix, activations=INT8_ACTIVATIONS[name])
        if not head.tied:
            head.weight = None  # the int8 copy replaces it
    for attention in model.modules():
        if isinstance(attention, Attention):
            attention.fuse_projections()  # one int8 product of x per layer for queries, keys and values
    quantize_linears(model, INT8_ACTIVATIONS[name])
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def model_weight_format(model: nn.Module) -> str:
    """"int8" or "int8-dynamic" for a model holding int8 weights, else the registry name of its parameters' dtype."""
    activations = int8_activations(model)
    if activations is not None:
        return next(name for name, kind in INT8_ACTIVATIONS.items() if kind == activations)
    return weight_format_name(next(model.parameters()).dtype)
