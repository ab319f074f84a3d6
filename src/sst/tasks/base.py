"""The task interface: what the one training loop needs from an experiment.

A task owns the model architecture, the data and the objective. The loop never branches on the
task: it asks for micro-batches by index, a loss with its weight (tokens, nodes, ...), and metrics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class TaskConfig:
    """Base of every task config; ``name`` selects the task in ``sst.tasks.TASK_CONFIGS``."""

    name: str = ""


class Task(ABC):
    """One kind of experiment (language modelling, translation, graph learning).

    ``selection_metric`` names the ``evaluate`` key used for best-checkpoint selection and early
    stopping; ``higher_is_better`` says which way it (and ``report_metric``) improves.
    ``report_metric`` is the key of the final results that comparisons tabulate (e.g. val_ppl).
    """

    selection_metric: str = "val_loss"
    higher_is_better: bool = False
    report_metric: str = ""  # the headline metric of comparisons (default: selection_metric)

    def __init__(self, config: TaskConfig, seed: int, run_dir: Path):
        self.config = config
        self.seed = seed
        self.run_dir = Path(run_dir)

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model (seeded by the caller's torch RNG), on the CPU."""

    @abstractmethod
    def train_batch(self, index: int) -> Any:
        """The ``index``-th micro-batch of the endless, epoch-shuffled training stream.

        Must be a pure function of (data, seed, index) so that resuming and data-parallel
        sharding are exact: rank ``r`` of ``w`` reads indices ``i * w + r``.
        Returns tensors (or a dict/tuple of tensors) on the CPU.
        """

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, float]:
        """(mean loss over the batch's units, number of units): units are tokens, nodes, edges."""

    @abstractmethod
    def evaluate(self, model: nn.Module, split: str = "val", max_batches: int = 0) -> dict[str, float]:
        """Metrics on a split ("val" or "test"), e.g. {"val_loss", "val_ppl"}; model in eval mode."""

    def final_metrics(self, model: nn.Module) -> dict[str, float]:
        """Extra metrics reported once at the end of a run (default: the test split, if any)."""
        return {}

    def epochs_seen(self, units: float, steps: int) -> float | None:
        """Passes over the training data after ``units`` training units in ``steps`` optimizer
        steps (None where the task cannot say)."""
        return None

    def describe(self) -> dict[str, Any]:
        """Facts about the data worth recording with the results (sizes, vocabulary, ...)."""
        return {}


def move_to(batch: Any, device: torch.device) -> Any:
    """Move a tensor, or a dict/list/tuple of tensors, to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch
