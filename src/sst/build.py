"""Assemble a run from its config: seed -> task -> fresh model -> the method's surgery.

Training and inference loading build their models through this one function, in the same order
and from the same seed, so a saved state dict always fits the model it is loaded into.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sst.config import RunConfig
from sst.methods import TrainingMethod, build_method
from sst.tasks import Task, build_task


@dataclass
class BuiltRun:
    """The three pieces a run is made of; ``model`` already holds the method's layers (on the CPU)."""

    task: Task
    model: nn.Module
    method: TrainingMethod


def build_run(config: RunConfig, run_dir: str | Path) -> BuiltRun:
    """Seed torch's global RNG with ``config.seed``, then build task, model and method in order."""
    torch.manual_seed(config.seed)
    task = build_task(config.task, config.seed, Path(run_dir))
    model = task.build_model()
    method = build_method(config.method, config.seed)
    model = method.prepare_model(model)
    return BuiltRun(task, model, method)
