"""Optimizer pieces independent of models: GaLore projection, moment reset, LR schedules."""

from sst.optim.galore import GaLoreAdamW, galore_projector, project, project_back
from sst.optim.moments import reset_state, state_bytes
from sst.optim.schedules import lr_factor

__all__ = [
    "GaLoreAdamW",
    "galore_projector",
    "lr_factor",
    "project",
    "project_back",
    "reset_state",
    "state_bytes",
]
