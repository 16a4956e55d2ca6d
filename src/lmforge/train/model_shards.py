"""Whole-model views of a possibly sharded model: full weights and optimizer state for checkpoints,
loading them back, and the global gradient norm. A plain or DDP model is already whole; an FSDP
model is gathered (every rank must call these together)."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..models.build import build_model


class ModelShards:
    def __init__(self, model: nn.Module, wrapped: nn.Module, fsdp: bool):
        self.model, self.wrapped, self.fsdp = model, wrapped, fsdp

    def _options(self, **extra):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, **extra)

    def reshard(self) -> None:
        """Put every FSDP unit back into its sharded state: a forward pass without backward (evaluation)
        leaves the root's parameters gathered, and state dicts must see the registered shards."""
        from torch.distributed.fsdp import FSDPModule

        for module in self.wrapped.modules():
            if isinstance(module, FSDPModule):
                module.reshard()

    def full_model(self) -> nn.Module:
        """A module holding every weight (on rank 0 for FSDP; other ranks get the sharded model)."""
        if not self.fsdp:
            return self.model
        self.reshard()
        import torch.distributed as dist
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = get_model_state_dict(self.wrapped, options=self._options(cpu_offload=True))
        if dist.get_rank() != 0:
            return self.model
        copy = build_model(self.model.config, self.model.task)
        copy.load_state_dict(state)
        copy.attach_tokenizer(getattr(self.model, "tokenizer", None))
        return copy

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer's full state dict (FSDP: keyed by parameter name, gathered on every rank)."""
        if not self.fsdp:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        self.reshard()
        return get_optimizer_state_dict(self.wrapped, optimizer, options=self._options())

    def load_model(self, weights: dict[str, torch.Tensor], load: Callable[[nn.Module, dict], None]) -> None:
        """Copy full `weights` into the model (`load(module, weights)` checks keys and shapes)."""
        if not self.fsdp:
            load(self.model, weights)
            return
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(self.wrapped, weights, options=self._options())

    def load_optimizer(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if not self.fsdp:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(self.wrapped, optimizer, state, options=self._options())

    def clip_grad_norm(self, max_norm: float) -> float:
        """Clip gradients to `max_norm` (inf: only measure) and return the global norm before clipping."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return 0.0
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if math.isfinite(max_norm) else float("inf"))
        if hasattr(norm, "full_tensor"):  # FSDP: a distributed tensor
            norm = norm.full_tensor()
        return float(norm)
