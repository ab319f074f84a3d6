"""Memory accounting: what a run holds (parameters, frozen tensors, gradients, optimizer state),
what autograd saves for backward, and the measured peak on every device; parameter counts.

peak = max_memory_allocated on CUDA; on the CPU, held + (RSS high-water mark - RSS at the reset
- growth of file-backed pages), held = the tensor bytes the run already holds at the reset
(parameters, buffers, optimizer state): the run's growth of anonymous memory on top of it.
"All" parameters are those of the merged plain model, the same for every method on one base model.
Bytes are this rank's: the local shards of a sharded (FSDP2) model and optimizer state.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sst.optim.moments import state_bytes
from sst.shards import local
from sst.spectral.factored import FactoredLinear

PROC_STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")  # writing "5" resets VmHWM to the current VmRSS (Linux)


def _bytes(tensors) -> int:
    return sum(local(t).numel() * t.element_size() for t in tensors)  # this rank's shards


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
    """Bytes of trainable parameters, frozen tensors (float buffers such as SST's U_frozen /
    Vh_frozen, parameters with requires_grad=False such as LoRA's W0), gradients of the trainable
    parameters (one of each one's size, whether allocated now or not) and optimizer state.

    ``param_bytes`` = trainable + frozen; ``model_state_bytes`` = param + grad + optimizer.
    """
    params = list(model.parameters())
    trainable = _bytes(p for p in params if p.requires_grad)
    frozen = _bytes(p for p in params if not p.requires_grad)
    frozen += _bytes(b for b in model.buffers() if b.is_floating_point())
    opt = state_bytes(optimizer) if optimizer is not None else 0
    return {
        "trainable_param_bytes": trainable,
        "frozen_bytes": frozen,
        "param_bytes": trainable + frozen,
        "grad_bytes": trainable,
        "optimizer_state_bytes": opt,
        "model_state_bytes": trainable + frozen + trainable + opt,
    }


# -- activations saved for backward ------------------------------------------------------------


@dataclass
class SavedActivations:
    """Bytes of the distinct storages autograd saved for backward (the model's own tensors excluded)."""

    bytes: int = 0
    tensors: int = 0  # how many saved tensors (views of one storage count once in ``bytes``)
    _seen: set = field(default_factory=set, repr=False)


def _storage_key(t: torch.Tensor) -> int:
    # The storage's identity: shared by every view of it, and defined on the meta device too,
    # where every data_ptr is 0.
    return t.untyped_storage()._cdata


@contextlib.contextmanager
def saved_activations(model: nn.Module, enabled: bool = True) -> Iterator[SavedActivations]:
    """Sum, during the ``with`` block (one forward), the bytes autograd saves for backward.

    Each storage counts once, at its full size (a saved slice keeps all of it alive); storages of
    the model's parameters and buffers are not counted (they live anyway). The hooks only look at
    sizes: nothing is copied or kept. ``enabled=False`` installs no hooks (the result stays 0).
    """
    found = SavedActivations()
    if not enabled:
        yield found
        return
    own = {_storage_key(t) for t in (*model.parameters(), *model.buffers())}

    def pack(t: torch.Tensor) -> torch.Tensor:
        found.tensors += 1
        if isinstance(t, nn.Parameter):  # FSDP2's gathered weights: parameters, not activations
            return t
        key = _storage_key(t)
        if key not in own and key not in found._seen:
            found._seen.add(key)
            found.bytes += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield found


# -- measured peak -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Baseline:
    """What the peak counts from: set by ``reset_peak``."""

    device_type: str
    held_bytes: int  # tensor bytes the run already holds at the reset
    resident_bytes: int  # CPU: the resident set (or ru_maxrss) at the reset
    file_bytes: int  # CPU: its file-backed part (code, memory-mapped files)
    source: str


# The counters behind the peak (CUDA's allocator statistics, the process's VmHWM) are per
# process, so there is one baseline per process: the last reset_peak's.
_baseline: _Baseline | None = None


def _resident() -> tuple[int, int, int, str]:
    """(resident bytes now, high-water mark, file-backed resident bytes, counter) of this process:
    VmRSS, VmHWM, RssFile from /proc/self/status, or without /proc getrusage's ru_maxrss for the
    first two and 0 for the third (ru_maxrss is in kB on Linux, in bytes on macOS)."""
    try:
        found = {}
        for line in PROC_STATUS.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssFile"):
                found[key] = int(value.split()[0]) * 1024  # reported in kB
        return found["VmRSS"], found["VmHWM"], found.get("RssFile", 0), "cpu_rss_high_water"
    except (OSError, KeyError, ValueError, IndexError):
        import resource  # Unix only; needed only without /proc

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak if sys.platform == "darwin" else peak * 1024
        return peak, peak, 0, "cpu_ru_maxrss"


def _trim_heap() -> None:
    # glibc keeps freed small blocks in its heap (resident, and not counted again when reused):
    # a run after another in the same process would reuse them unseen and its growth would read
    # too low. malloc_trim(0) gives every free page of every arena back to the system first.
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None) if sys.platform.startswith("linux") else None
    if trim is not None:
        trim(0)


def _reset_high_water() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def reset_peak(device: torch.device, held_bytes: int = 0) -> None:
    """Start measuring the peak from now; ``held_bytes``: tensor bytes the run already holds
    (parameters, buffers, optimizer state), counted into the CPU peak (CUDA's counts them itself)."""
    global _baseline
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        _baseline = _Baseline("cuda", held_bytes, 0, 0, "cuda_max_memory_allocated")
        return
    if device.type != "cpu":
        _baseline = _Baseline(device.type, held_bytes, 0, 0, f"unavailable on {device.type}")
        return
    gc.collect()
    _trim_heap()
    resettable = _reset_high_water()
    now, _, file_backed, counter = _resident()
    # ru_maxrss never resets: the growth of the process's maximum above the one at the reset,
    # exact when the run sets a new maximum (as a run in a process of its own does).
    resettable = resettable and counter == "cpu_rss_high_water"
    _baseline = _Baseline("cpu", held_bytes, now, file_backed, counter + ("" if resettable else " (not resettable)"))


def _current_baseline(device: torch.device) -> _Baseline:
    if _baseline is not None and _baseline.device_type == device.type:
        return _baseline
    counter = _resident()[3] if device.type == "cpu" else f"unavailable on {device.type}"
    return _Baseline(device.type, 0, 0, 0, f"{counter} (no reset: since the process started)")


def peak_memory_bytes(device: torch.device) -> int:
    """Peak bytes on ``device`` since ``reset_peak``: CUDA's max_memory_allocated; on the CPU the
    held bytes plus the resident set's growth above its size at the reset (0 where unknown).

    File-backed pages are no training memory: the code of the kernels a process runs for the
    first time is paged in during its first run (about 9 MB for a tiny LLaMA), so their growth
    is left out and the first run of a process is not charged for it.
    """
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if device.type != "cpu":
        return 0
    base = _current_baseline(device)
    _, high, file_backed, _ = _resident()
    return base.held_bytes + max(0, high - base.resident_bytes - max(0, file_backed - base.file_bytes))


def peak_memory_source(device: torch.device) -> str:
    """Where ``peak_memory_bytes`` comes from: "cuda_max_memory_allocated", "cpu_rss_high_water",
    "cpu_ru_maxrss (not resettable)", ..."""
    if device.type == "cuda":
        return "cuda_max_memory_allocated"
    return _current_baseline(device).source
