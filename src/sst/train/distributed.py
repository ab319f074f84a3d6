"""Data parallelism through PyTorch's own engines: torchrun sets RANK/WORLD_SIZE; ``ddp`` replicates
the model (DistributedDataParallel), ``fsdp`` shards it (FSDP2 ``fully_shard``: each rank keeps
1/world of every parameter, gradient and optimizer moment and gathers a block's weights for its
forward and backward).

Every rank builds the same model from the same seed; methods keep ranks in step by sampling from
identically seeded generators and broadcasting re-SVD results from rank 0.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from sst.devices import resolve_device
from sst.models.recompute import recomputed_blocks

Parallelism = Literal["ddp", "fsdp"]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    parallelism: Parallelism = "ddp"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def sharded(self) -> bool:
        """Parameters are FSDP2 DTensors (also with a world of one)."""
        return self.parallelism == "fsdp"


def device_info(device_name: str = "auto") -> dict[str, str]:
    """Where a run or benchmark executes: {"device": "cuda"|"cpu", "device_name", "torch"}."""
    cuda = resolve_device(device_name).type == "cuda"
    return {
        "device": "cuda" if cuda else "cpu",
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
    }


def setup(device_name: str = "auto", parallelism: Parallelism = "ddp") -> DistInfo:
    """Initialise the process group when launched by torchrun (gloo on CPU, NCCL on CUDA); ``fsdp``
    needs one even for a single process (a one-rank group in memory when torchrun is not used)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if (world > 1 or parallelism == "fsdp") and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if "MASTER_ADDR" in os.environ:
            torch.distributed.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
        else:
            torch.distributed.init_process_group(backend=backend, store=torch.distributed.HashStore(),
                                                 rank=0, world_size=1)
    return DistInfo(rank, world, local_rank, device, parallelism)


def sharded_blocks(model: nn.Module) -> list[nn.Module]:
    """The units FSDP shards one by one: our models' repeated blocks (``recomputed_blocks``), or
    the modules whose class a Hugging Face model names in ``_no_split_modules`` (its decoder layers)."""
    blocks = recomputed_blocks(model)
    if blocks:
        return blocks
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def shard(model: nn.Module, info: DistInfo) -> nn.Module:
    """FSDP2: ``fully_shard`` each block, then the root (bf16 compute, float32 gradient reduction on
    CUDA). Buffers a layer names in ``sharded_buffers`` (SST's frozen factors) become frozen
    parameters first, so that they are sharded too; their state-dict keys stay the same."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    for module in model.modules():
        for name in getattr(module, "sharded_buffers", ()):
            buffer = module._buffers.pop(name)
            module.register_parameter(name, nn.Parameter(buffer, requires_grad=False))
    kwargs = {}
    if info.device.type == "cuda":
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in sharded_blocks(model):
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """``fsdp``: shard ``model`` in place (see ``shard``); ``ddp``: DDP-wrap it when more than one
    process takes part; identity otherwise."""
    if info.sharded:
        return shard(model, info)
    if not info.enabled:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def reshard(model: nn.Module) -> None:
    """FSDP2 keeps the root's parameters gathered after a forward without backward (evaluation):
    shard them again, so that checkpoints, structural events and memory reports see the shards."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        model.reshard()


def no_sync(wrapped: nn.Module):
    """A context for micro-steps whose gradients are only accumulated (DDP's ``no_sync``); FSDP2
    reduces every micro-step's gradients into its shards, which gives the same sum."""
    if isinstance(wrapped, nn.parallel.DistributedDataParallel):
        return wrapped.no_sync()
    return contextlib.nullcontext()


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
