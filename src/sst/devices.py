"""Devices: a config's device string -> a ``torch.device`` that exists here, and its free memory.

"auto" is the local CUDA device when there is one, else the CPU. Free memory is what the CUDA
driver reports free on that GPU, or on the CPU min(MemAvailable, cgroup limit - usage): the
bytes a new allocation can take without swapping or being killed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sst.errors import ConfigError

_CGROUP = Path("/sys/fs/cgroup")


def resolve_device(name: str, local_rank: int = 0, key: str = "train.device") -> torch.device:
    """The device ``name`` ("auto", "cpu", "cuda", "cuda:1", ...) names; ConfigError naming ``key``
    if it is not a device string or the device is not present on this machine."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{key}: {name!r} is not a device; use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}={name!r} but CUDA is not available on this machine; use auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{key}={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
        return device
    backend = getattr(torch, device.type, None)
    if backend is None or not getattr(backend, "is_available", lambda: False)():
        raise ConfigError(f"{key}={name!r}: no {device.type} device is available here; use auto, cpu or cuda")
    return device


def _cgroup_free() -> int | None:
    # cgroup v2: the container's limit minus what it already uses; None without a limit.
    try:
        limit = (_CGROUP / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((_CGROUP / "memory.current").read_text()))
    except (OSError, ValueError):
        return None


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """(free bytes, where that number comes from) on ``device``; None where it cannot be known."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device} (cudaMemGetInfo)"
    if device.type != "cpu":
        return None
    found = [(v, what) for v, what in ((_mem_available(), "MemAvailable"), (_cgroup_free(), "cgroup limit"))
             if v is not None]
    return min(found) if found else None


__all__ = ["available_memory", "resolve_device"]
