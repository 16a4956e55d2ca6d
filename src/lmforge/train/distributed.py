"""torchrun support: process group from the environment, DDP / FSDP wrapping, reductions.

`torchrun --nproc-per-node N -m lmforge pretrain ...` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
and MASTER_PORT; `Distributed.from_env()` reads them (a plain run is rank 0 of 1). CPUs use the gloo
backend, GPUs nccl. Multi-node runs work the same way (torchrun --nnodes ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..nn.block import Block


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    started_here: bool = False  # this object initialised the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: str | None = None) -> "Distributed":
        """Join the process group torchrun describes (if any) and choose this rank's device."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device is None:
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        device = torch.device(device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        started = False
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            started = True
        if dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        return cls(rank, world, local, device, started)

    def close(self) -> None:
        if self.started_here and dist.is_initialized():
            dist.destroy_process_group()

    # ---- collectives (no-ops in a single process) ---------------------------------------------
    def sum(self, values: list[float]) -> list[float]:
        """Sum a list of numbers over ranks (float64)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        objects = [None] * self.world_size
        dist.all_gather_object(objects, obj)
        return objects

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def _collective_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    # ---- wrapping -----------------------------------------------------------------------------
    def wrap(self, model: nn.Module, fsdp: bool = False) -> nn.Module:
        """DDP (every rank holds the whole model) or FSDP (parameters, gradients and optimizer
        state sharded over ranks, each block a unit). A single process gets the model back."""
        if not self.enabled:
            return model
        if fsdp:
            from torch.distributed.fsdp import fully_shard

            for module in model.modules():
                if isinstance(module, Block):  # each Transformer block is one shard unit
                    fully_shard(module)
            return fully_shard(model)
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # Some parameters take no part in a loss: BERT's pooler while pretraining with masked LM or RTD. DDP
        # must not wait for their gradients (they stay None on every rank, as in one process).
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
