"""GaLore baseline: dense weights, target gradients projected to rank r inside the optimizer.

No surgery: the target matrices get a parameter group with ``rank``, ``proj_update_every`` and
``scale`` that ``GaLoreAdamW`` reads; everything else is plain AdamW.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from sst.methods.base import MethodConfig, TrainingMethod
from sst.methods.surgery import check_rank, find_targets
from sst.optim.galore import GaLoreAdamW
from sst.schema import check_range


@dataclass
class GaLoreConfig(MethodConfig):
    interval_key: ClassVar[str | None] = "proj_update_every"

    name: str = "galore"
    rank: int = 8
    proj_update_every: int = 200
    scale: float = 0.25

    def __post_init__(self):
        super().__post_init__()
        check_range("method.rank", self.rank, low=1)
        check_range("method.proj_update_every", self.proj_update_every, low=1)
        check_range("method.scale", self.scale, low=0, low_inclusive=False)


class GaLoreMethod(TrainingMethod):
    def prepare_model(self, model: nn.Module) -> nn.Module:
        check_rank(find_targets(model, self.config.target_modules, self.config.exclude_modules), self.config.rank)
        return model

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        cfg = self.config
        targets = find_targets(model, cfg.target_modules, cfg.exclude_modules)
        projected = {id(layer.weight) for layer in targets.values()}
        groups = super().param_groups(model, weight_decay)
        low_rank = [p for p in groups[0]["params"] if id(p) in projected]
        groups[0]["params"] = [p for p in groups[0]["params"] if id(p) not in projected]
        groups.append({
            "params": low_rank, "weight_decay": weight_decay, "rank": cfg.rank,
            "proj_update_every": cfg.proj_update_every, "scale": cfg.scale,
        })
        return groups

    def after_step(self, model: nn.Module, optimizer, step: int) -> dict:
        # GaLoreAdamW recomputes its projectors in the steps whose count before them is a multiple
        # of the period; report it so that logs show the method's events like the others'.
        return {"projector_update": 1} if (step - 1) % self.config.proj_update_every == 0 else {}

    def build_optimizer(self, model, lr, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8):
        groups = [g for g in self.param_groups(model, weight_decay) if g["params"]]
        return GaLoreAdamW(groups, lr=lr, betas=betas, eps=eps)
