"""What a device can compute in: the one place lmforge asks torch whether fp16 or bf16 runs on a device.
Training (`train.precision`) and inference weight formats (`models.weight_formats`) both ask here, so
they never disagree about a device; each phrases the refusal with its own command's fix."""

from __future__ import annotations

import torch


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX); without them torch
    emulates bf16 products, many times slower than float32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def half_precision_problem(name: str, device: torch.device | str) -> str | None:
    """Why `device` cannot compute in the half precision `name` ("fp16" or "bf16"), as a clause such
    as "fp16 needs a CUDA GPU"; None when it can (or when `name` is not a half precision).

    bf16 on a CPU without bf16 units is allowed: torch emulates it, slowly (see `cpu_has_bf16_units`)."""
    device = torch.device(device)
    if name == "fp16" and device.type != "cuda":
        return "fp16 needs a CUDA GPU"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return (f"bf16 needs a GPU with bf16 units (Ampere or newer) but "
                f"{torch.cuda.get_device_name(device)} has none")
    return None
