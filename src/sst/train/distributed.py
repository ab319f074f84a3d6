"""Data parallelism through PyTorch's own engine: torchrun sets RANK/WORLD_SIZE, we wrap in DDP.

Every rank builds the same model from the same seed; methods keep ranks in step by sampling from
identically seeded generators and broadcasting re-SVD results from rank 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from sst.devices import resolve_device


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def device_info(device_name: str = "auto") -> dict[str, str]:
    """Where a run or benchmark executes: {"device": "cuda"|"cpu", "device_name", "torch"}."""
    cuda = resolve_device(device_name).type == "cuda"
    return {
        "device": "cuda" if cuda else "cpu",
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
    }


def setup(device_name: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return DistInfo(rank, world, local_rank, device)


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP-wrap ``model`` when more than one process takes part; identity otherwise."""
    if not info.enabled:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_true(flag: bool, info: DistInfo) -> bool:
    """Logical AND of ``flag`` over ranks (so every rank takes the same branch)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        torch.distributed.barrier()
