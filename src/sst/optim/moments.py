"""Optimizer-state surgery: zero the moments of re-initialised tensors.

After SST re-samples vectors or ReLoRA restarts its factors, the Adam moments of those tensors
describe directions that no longer exist; zeroing them (and the per-tensor step count, so bias
correction restarts) gives the new vectors a fresh optimizer, and the LR re-warm-up covers it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from sst.shards import full, local, write_


@torch.no_grad()
def reset_state(optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor]) -> int:
    """Zero every tensor in the optimizer state of ``params``; returns how many tensors were reset."""
    count = 0
    for p in params:
        state = optimizer.state.get(p)
        if not state:
            continue
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                value.zero_()
                count += 1
            elif key == "step":  # optimizers that count steps in a Python number
                state[key] = 0
                count += 1
    return count


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held by tensors in the optimizer state (moments, projections, step counters); this
    rank's shards only for a sharded state."""
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += local(value).numel() * value.element_size()
    return total


@torch.no_grad()
def permute_state(optimizer: torch.optim.Optimizer, param: torch.Tensor, index: torch.Tensor) -> None:
    """Reorder the per-element state of ``param`` like its values: state <- state[index]
    (a sharded state is gathered, reordered and written back into its shards)."""
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            whole = full(value)
            write_(value, whole[index.to(whole.device)])
