"""Load a trained run for inference: config -> task -> model -> the method's surgery -> weights.

A run directory holds ``best/`` and ``last/`` checkpoints (model.safetensors, state.pt,
config.yaml); inference uses ``best/`` when present. The model is rebuilt exactly as training
built it, so the saved state dict fits strictly; anything else is a ``CheckpointError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sst.build import build_run
from sst.config import ConfigError, RunConfig, build_config
from sst.devices import resolve_device
from sst.methods import TrainingMethod
from sst.tasks import Task
from sst.checkpoint import (
    BEST, CONFIG_FILE, LAST, MODEL_FILE, SHARDS_DIR, CheckpointError, find_checkpoint, load_config_file,
    load_weights,
)


@dataclass
class LoadedRun:
    """A checkpoint ready for inference; ``model`` still holds the method's layers (unmerged).
    An export read back (``sst.inference.opening``) has no method: ``method`` is None."""

    config: RunConfig
    task: Task
    model: nn.Module
    method: TrainingMethod | None
    checkpoint: Path  # the checkpoint directory that was read
    run_dir: Path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory: ``path`` itself, or a run directory's ``best/`` (else ``last/``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if path.is_file():
        path = path.parent if path.name == MODEL_FILE else path
    if (path / MODEL_FILE).is_file() or (path / SHARDS_DIR).is_dir():  # whole or sharded (FSDP2)
        return path
    for name in (BEST, LAST):  # complete in the same sense as --resume's
        found = find_checkpoint(path / name)
        if found is not None:
            return found
    raise CheckpointError(
        f"{path}: neither a checkpoint directory (no {MODEL_FILE}) nor a run directory "
        f"(no {BEST}/ or {LAST}/ checkpoint inside)"
    )


def read_run_config(checkpoint: Path) -> tuple[RunConfig, dict]:
    """The validated RunConfig (and its plain dict) saved with ``checkpoint`` (or its run dir)."""
    source = checkpoint if (checkpoint / CONFIG_FILE).is_file() else checkpoint.parent
    data = load_config_file(source)
    try:
        return build_config(data), data
    except ConfigError as err:
        raise CheckpointError(f"{source / CONFIG_FILE}: not a valid run config for this version of sst ({err})") from err


def load_run(path: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the model of a run (or checkpoint) directory and load its weights strictly."""
    device = resolve_device(device, key="--device") if isinstance(device, str) else device
    checkpoint = resolve_checkpoint(path)
    config, _ = read_run_config(checkpoint)
    run_dir = checkpoint.parent
    with torch.random.fork_rng(devices=[]):  # rebuild as training did, leaving the caller's RNG alone
        built = build_run(config, run_dir, training=False)
    load_weights(checkpoint, built.model)
    built.model.to(device).eval()
    return LoadedRun(config, built.task, built.model, built.method, checkpoint, run_dir)
