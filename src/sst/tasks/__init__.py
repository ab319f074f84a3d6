"""Task registry: ``name`` in a run config -> (config dataclass, Task class).

Each task module defines ``TASK_CONFIGS`` and ``TASK_CLASSES`` dicts keyed by task name; optional
heavy libraries are imported inside functions so that listing tasks stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from sst.tasks.base import Task, TaskConfig, move_to

_MODULES = ("sst.tasks.lm", "sst.tasks.translation", "sst.tasks.graph")

TASK_CONFIGS: dict[str, type[TaskConfig]] = {}
TASK_CLASSES: dict[str, type[Task]] = {}

for _name in _MODULES:
    if importlib.util.find_spec(_name) is not None:
        _mod = importlib.import_module(_name)
        TASK_CONFIGS.update(_mod.TASK_CONFIGS)
        TASK_CLASSES.update(_mod.TASK_CLASSES)


def build_task(config: TaskConfig, seed: int, run_dir: str | Path) -> Task:
    """Instantiate the task that ``config.name`` selects."""
    return TASK_CLASSES[config.name](config, seed, Path(run_dir))


__all__ = ["Task", "TaskConfig", "TASK_CONFIGS", "TASK_CLASSES", "build_task", "move_to"]
