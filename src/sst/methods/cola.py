"""CoLA (arXiv 2502.10940): every target linear trains from scratch as x -> A -> SiLU -> B.

A changed architecture, not a reparametrised weight: the layers are no FactoredLinear, so
``merge_model`` leaves them as they are, and inference runs the two-matrix form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from sst.methods.base import MethodConfig, TrainingMethod
from sst.methods.cola_linear import CoLALinear
from sst.methods.surgery import check_rank, find_targets, replace_modules
from sst.schema import check_range


@dataclass
class CoLAConfig(MethodConfig):
    role: ClassVar[str] = "peer"
    default_in_comparisons: ClassVar[bool] = False

    name: str = "cola"
    rank: int = 8

    def __post_init__(self):
        super().__post_init__()
        check_range("method.rank", self.rank, low=1)


class CoLAMethod(TrainingMethod):
    """Replace target layers by CoLALinear; A, B and every non-target parameter train."""

    def prepare_model(self, model: nn.Module) -> nn.Module:
        cfg = self.config
        targets = find_targets(model, cfg.target_modules, cfg.exclude_modules)
        check_rank(targets, cfg.rank)
        replace_modules(model, targets, lambda _, lin: CoLALinear.from_dense(lin, cfg.rank, self.generator))
        return model
