"""SLTrain (NeurIPS 2024): every target layer trains from scratch as W = (alpha / r) B A + S.

S is sparse on a random support of ``density`` (fixed for the whole run, saved with the weights);
its values, A, B and every non-target parameter train. Merging to a dense nn.Linear is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from sst.methods.base import MethodConfig, TrainingMethod
from sst.methods.sltrain_linear import SLTrainLinear
from sst.methods.surgery import check_rank, find_targets, replace_modules
from sst.schema import check_range


@dataclass
class SLTrainConfig(MethodConfig):
    role: ClassVar[str] = "peer"
    default_in_comparisons: ClassVar[bool] = False

    name: str = "sltrain"
    rank: int = 8
    density: float = 0.03  # share of each W's entries in the sparse part S
    alpha: float = 0.0  # 0: alpha = rank (scaling 1); the authors use 32 at rank 128

    def __post_init__(self):
        super().__post_init__()
        check_range("method.rank", self.rank, low=1)
        check_range("method.density", self.density, low=0, high=1, low_inclusive=False, high_inclusive=False,
                    note="the share of each weight's entries in the sparse part")
        check_range("method.alpha", self.alpha, low=0, note="0: alpha = rank")


class SLTrainMethod(TrainingMethod):
    """Replace target layers by SLTrainLinear (support drawn from the method's seeded generator)."""

    def prepare_model(self, model: nn.Module) -> nn.Module:
        cfg = self.config
        targets = find_targets(model, cfg.target_modules, cfg.exclude_modules)
        check_rank(targets, cfg.rank)
        alpha = cfg.alpha or float(cfg.rank)
        replace_modules(model, targets, lambda _, lin: SLTrainLinear.from_dense(
            lin, cfg.rank, cfg.density, alpha, self.generator))
        return model

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        # The sparse values are entries of a weight matrix, though stored as a vector: they decay
        # like the matrices around them.
        values = {id(m.values) for m in model.modules() if isinstance(m, SLTrainLinear)}
        groups = super().param_groups(model, weight_decay)
        moved = [p for p in groups[1]["params"] if id(p) in values]
        groups[1]["params"] = [p for p in groups[1]["params"] if id(p) not in values]
        groups[0]["params"] = groups[0]["params"] + moved
        return groups

    def report(self) -> dict:
        return {**super().report(), "density": self.config.density}
