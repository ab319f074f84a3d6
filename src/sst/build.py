"""Assemble a run from its config: seed -> task -> fresh model -> the method's surgery.

Training and inference loading build their models through this one function, in the same order
and from the same seed, so a saved state dict always fits the model it is loaded into. Before a
training run allocates anything it is checked: the output folder can be written, the packages
its settings name are installed, and the model fits in memory (``sst.sizing``).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sst.config import ConfigError, RunConfig
from sst.devices import resolve_device
from sst.methods import TrainingMethod, build_method
from sst.sizing import check_training_memory
from sst.tasks import Task, build_task


@dataclass
class BuiltRun:
    """The three pieces a run is made of; ``model`` already holds the method's layers (on the CPU)."""

    task: Task
    model: nn.Module
    method: TrainingMethod


def check_output_dir(run_dir: Path) -> None:
    """ConfigError naming ``out_dir`` unless ``run_dir`` is (or can be made) a writable folder."""
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"out_dir (--out): {existing} is a file, not a folder; choose another out_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "the output folder" if existing == run_dir else f"{run_dir}: its parent folder"
        raise ConfigError(f"out_dir (--out): {what} {existing} is not writable; choose another out_dir")


def check_packages(config: RunConfig) -> None:
    """ConfigError naming the key whose setting needs a package that is not installed."""
    if config.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "train.tensorboard: true needs the tensorboard package, which is not installed "
            "(pip install tensorboard), or set train.tensorboard=false"
        )


def build_run(config: RunConfig, run_dir: str | Path, training: bool = True) -> BuiltRun:
    """Seed torch's global RNG with ``config.seed``, then build task, model and method in order.

    ``training``: first check that the run can train here (output folder, packages, memory on
    ``train.device``), so that what cannot work fails in a second, before any allocation.
    """
    torch.manual_seed(config.seed)
    if training:
        check_output_dir(Path(run_dir))
        check_packages(config)
    task = build_task(config.task, config.seed, Path(run_dir))
    if training:
        device = resolve_device(config.train.device, int(os.environ.get("LOCAL_RANK", "0")))
        shards = int(os.environ.get("WORLD_SIZE", "1")) if config.train.parallelism == "fsdp" else 1
        check_training_memory(task, config.method, device, config.train.activation_checkpointing, shards)
    model = task.build_model()
    method = build_method(config.method, config.seed)
    model = method.prepare_model(model)
    return BuiltRun(task, model, method)
