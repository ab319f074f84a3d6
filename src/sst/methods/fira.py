"""Fira: GaLore's target matrices and projector schedule, trained by FiraAdamW (arXiv 2410.01623).

No surgery: each target weight W (m, n) stays dense; its gradient G is split into the rank-r
projection R (Adam in the subspace, as GaLore) and the residual G - back(R), which joins the update
scaled by ||psi(R)|| / ||R|| and capped by the norm-growth limiter (see ``sst.optim.fira``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sst.methods.galore import GaLoreConfig, GaLoreMethod
from sst.optim.fira import FiraAdamW
from sst.schema import check_range


@dataclass
class FiraConfig(GaLoreConfig):
    role: ClassVar[str] = "peer"
    default_in_comparisons: ClassVar[bool] = False

    name: str = "fira"
    # 1: the paper's update, where the projected part and the residual share one step size (the
    # authors' code, at scale != 1, also scales the back-projection subtracted from G).
    scale: float = 1.0
    limiter_gamma: float = 1.01

    def __post_init__(self):
        super().__post_init__()
        check_range("method.limiter_gamma", self.limiter_gamma, low=1.0)


class FiraMethod(GaLoreMethod):
    """GaLore's parameter groups (``rank``, ``proj_update_every``, ``scale``), stepped by FiraAdamW."""

    def build_optimizer(self, model, lr, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8):
        groups = [g for g in self.param_groups(model, weight_decay) if g["params"]]
        return FiraAdamW(groups, lr=lr, betas=betas, eps=eps, limiter_gamma=self.config.limiter_gamma)
