"""Parameter counts and memory accounting: parameter, gradient and optimizer-state bytes, the CUDA peak.

Counts: "all" parameters are those of the merged plain model, the same for every method on one
base model. Gradient bytes count the trainable parameters (each gets a gradient of its own
size); parameter bytes include buffers (SST's frozen singular vectors, LoRA's W0 when a buffer).
"""

from __future__ import annotations

import torch
from torch import nn

from sst.optim.moments import state_bytes
from sst.spectral.factored import FactoredLinear


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, all) parameters; all = the parameters of the merged plain model.

    Each FactoredLinear counts as its dense out x in (+ bias) and nothing else: SST's frozen
    singular vectors and LoRA's W0 never count twice, so "all" is the same for full-rank, LoRA,
    SST and GaLore on one base model; a changed architecture (CoLA) counts its own parameters.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    factored = [m for m in model.modules() if isinstance(m, FactoredLinear)]
    inside = {id(p) for m in factored for p in m.parameters()}
    total = sum(p.numel() for p in model.parameters() if id(p) not in inside)
    total += sum(m.in_features * m.out_features + (m.out_features if m.bias is not None else 0) for m in factored)
    return trainable, total


def memory_report(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes of parameters (+ float buffers), gradients of trainable parameters, optimizer state."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    params += sum(b.numel() * b.element_size() for b in model.buffers() if b.is_floating_point())
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
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
