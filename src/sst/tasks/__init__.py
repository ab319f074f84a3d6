"""Task registry: ``name`` in a run config -> (config dataclass, Task class), in ``sst.registry.TASKS``.

Optional heavy libraries (tokenizers, sacrebleu, torch_geometric) are imported inside the task
modules' functions, so importing every task here stays cheap.
"""

from __future__ import annotations

from pathlib import Path

from sst.registry import TASKS
from sst.tasks.base import Task, TaskConfig, move_to
from sst.tasks.graph import LinkPredictionConfig, LinkPredictionTask, NodeClassificationConfig, NodeClassificationTask
from sst.tasks.lm import LMTask, LMTaskConfig
from sst.tasks.translation import TranslationTask, TranslationTaskConfig

TASKS.register_all([
    ("lm", LMTaskConfig, LMTask),
    ("translation", TranslationTaskConfig, TranslationTask),
    ("node_classification", NodeClassificationConfig, NodeClassificationTask),
    ("link_prediction", LinkPredictionConfig, LinkPredictionTask),
])

TASK_CONFIGS: dict[str, type[TaskConfig]] = TASKS.configs
TASK_CLASSES: dict[str, type[Task]] = TASKS.classes


def build_task(config: TaskConfig, seed: int, run_dir: str | Path) -> Task:
    """Instantiate the task that ``config.name`` selects."""
    return TASKS.build(config, seed, Path(run_dir))


__all__ = ["Task", "TaskConfig", "TASK_CONFIGS", "TASK_CLASSES", "build_task", "move_to"]
