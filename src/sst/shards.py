"""Sharded tensors seen whole: a module's DTensors gathered, changed as full tensors, written back.

Under FSDP2 a parameter is a DTensor whose rank-local part is rows [a, b) of the full tensor.
``gathered(module)`` swaps each such tensor for its full value T = all_gather(shards), runs the
single-device code on T, then copies rows [a, b) of the new T into the local shard; every rank
computes the same T from the same inputs (and the same generator), so the shards stay consistent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

try:
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:  # a torch built without distributed support: nothing is ever sharded
    DTensor, distribute_tensor = (), None


def is_sharded(tensor: torch.Tensor) -> bool:
    return isinstance(tensor, DTensor)


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of ``tensor`` (gathered from every rank for a DTensor; itself otherwise)."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of ``tensor`` (the local shard of a DTensor; itself otherwise)."""
    return tensor.to_local() if is_sharded(tensor) else tensor


@torch.no_grad()
def write_(tensor: torch.Tensor, value: torch.Tensor) -> None:
    """tensor <- value, where ``value`` is the full tensor (each rank keeps its own rows; no comms)."""
    if not is_sharded(tensor):
        tensor.copy_(value)
        return
    shard = distribute_tensor(value.to(tensor.dtype), tensor.device_mesh, tensor.placements, src_data_rank=None)
    tensor.to_local().copy_(shard.to_local())


def any_sharded(modules: Sequence[nn.Module]) -> bool:
    return any(is_sharded(t) for m in modules for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)))


def one_at_a_time(modules: Sequence[nn.Module]) -> list[list[nn.Module]]:
    """``modules`` as one batch when nothing is sharded, else one module per batch (gathering
    every module at once would hold the whole model on each rank)."""
    modules = list(modules)
    if not modules:
        return []
    return [[m] for m in modules] if any_sharded(modules) else [modules]


@contextlib.contextmanager
def gathered(*modules: nn.Module) -> Iterator[None]:
    """Inside: each module's own sharded parameters and buffers are full plain tensors.

    On exit the new full values are written back into the local shards and the original DTensor
    parameters (the optimizer's keys) are restored. A no-op for modules with nothing sharded.
    Optimizer-state surgery must happen outside: inside, ``module.weight`` is a temporary tensor.
    """
    swapped: list[tuple[nn.Module, str, str, torch.Tensor, torch.Tensor]] = []
    for module in modules:
        for kind in ("_parameters", "_buffers"):
            for name, tensor in list(getattr(module, kind).items()):
                if tensor is None or not is_sharded(tensor):
                    continue
                whole = tensor.full_tensor()
                if kind == "_parameters":
                    whole = nn.Parameter(whole, requires_grad=tensor.requires_grad)
                getattr(module, kind)[name] = whole
                swapped.append((module, kind, name, tensor, whole))
    try:
        yield
    finally:
        for module, kind, name, tensor, whole in swapped:
            write_(tensor, getattr(module, kind)[name].detach())
            getattr(module, kind)[name] = tensor
