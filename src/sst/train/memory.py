"""Memory accounting: parameter, gradient and optimizer-state bytes, and the CUDA peak.

Gradient bytes count the trainable parameters (each gets a gradient of its own size);
parameter bytes include buffers (SST's frozen singular vectors, LoRA's W0 when a buffer).
Bytes are this rank's: the local shards of a sharded (FSDP2) model and optimizer state.
"""

from __future__ import annotations

import torch
from torch import nn

from sst.optim.moments import state_bytes
from sst.shards import local


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; SST's frozen vectors are buffers and count in total."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for b in model.buffers() if b.is_floating_point()
    )
    return trainable, total


def memory_report(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes of parameters (+ float buffers), gradients of trainable parameters, optimizer state."""
    params = sum(local(p).numel() * p.element_size() for p in model.parameters())
    params += sum(local(b).numel() * b.element_size() for b in model.buffers() if b.is_floating_point())
    grads = sum(local(p).numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    opt = state_bytes(optimizer) if optimizer is not None else 0
    return {
        "param_bytes": params,
        "grad_bytes": grads,
        "optimizer_state_bytes": opt,
        "model_state_bytes": params + grads + opt,
    }


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA peak allocated bytes since the last reset; 0 on the CPU (see ``memory_report``)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return 0


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
