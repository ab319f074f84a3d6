"""LoRA for pre-training: W = W0 + (alpha / r) B A with W0 the frozen random initialisation.

B (out, r) starts at zero and A (r, in) is Kaiming-uniform, so the model is unchanged at
injection; only A, B (and every non-target parameter) train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from sst.schema import check_range
from sst.methods.base import MethodConfig, TrainingMethod
from sst.methods.surgery import check_rank, find_targets, replace_modules
from sst.spectral.factored import FactoredLinear


class LoRALinear(FactoredLinear):
    """y = x W0^T + b + (alpha / r) (x A^T) B^T for x (..., in) -> (..., out).

    ``weight`` (out, in) is W0: a Parameter with requires_grad=False (DDP skips it, and ReLoRA's
    optional full-rank warm start can train it).
    """

    def __init__(
        self, in_features: int, out_features: int, rank: int, alpha: float,
        use_bias: bool = True, device=None, dtype=None,
    ):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.in_features, self.out_features, self.rank, self.alpha = in_features, out_features, rank, alpha
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **kw), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_features, **kw)) if use_bias else None
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, **kw))

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def from_dense(
        cls, linear: nn.Linear, rank: int, alpha: float, generator: torch.Generator | None = None
    ) -> "LoRALinear":
        layer = cls(
            linear.in_features, linear.out_features, rank, alpha,
            use_bias=linear.bias is not None, device=linear.weight.device, dtype=linear.weight.dtype,
        )
        if not linear.weight.is_meta:
            with torch.no_grad():
                layer.weight.copy_(linear.weight)
                if linear.bias is not None:
                    layer.bias.copy_(linear.bias)
            layer.reset_factors_(generator)
        return layer

    @torch.no_grad()
    def reset_factors_(self, generator: torch.Generator | None = None) -> None:
        """A <- Kaiming-uniform (nn.Linear's default), B <- 0: the LoRA term becomes zero."""
        bound = 1.0 / math.sqrt(self.in_features)
        A = torch.empty(self.lora_A.shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
        self.lora_A.copy_(A)
        self.lora_B.zero_()

    def delta(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(alpha / r) B A -> (out, in), in ``dtype`` (default the factors')."""
        dtype = dtype or self.lora_B.dtype
        return self.scaling * (self.lora_B.to(dtype) @ self.lora_A.to(dtype))

    @torch.no_grad()
    def merge_(self) -> None:
        """W0 <- W0 + (alpha / r) B A, then restart A and B: the function is unchanged."""
        self.weight.add_(self.delta().to(self.weight.dtype))
        self.lora_B.zero_()

    def dense_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """W0 + (alpha / r) B A -> (out, in), in ``dtype`` (default W0's)."""
        dtype = dtype or self.weight.dtype
        return self.weight.to(dtype) + self.delta(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = nn.functional.linear(x, self.weight, self.bias)
        return base + self.scaling * nn.functional.linear(nn.functional.linear(x, self.lora_A), self.lora_B)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, alpha={self.alpha}"


@dataclass
class LoRAConfig(MethodConfig):
    role: ClassVar[str] = "baseline"

    name: str = "lora"
    rank: int = 8
    alpha: float = 0.0  # 0: alpha = rank (scaling 1)

    def __post_init__(self):
        super().__post_init__()
        check_range("method.rank", self.rank, low=1)
        check_range("method.alpha", self.alpha, low=0, note="0: alpha = rank")


class LoRAMethod(TrainingMethod):
    """Replace target layers by LoRALinear; A, B and every non-target parameter train."""

    def prepare_model(self, model: nn.Module) -> nn.Module:
        cfg = self.config
        targets = find_targets(model, cfg.target_modules, cfg.exclude_modules)
        check_rank(targets, cfg.rank)
        alpha = cfg.alpha or float(cfg.rank)
        replace_modules(model, targets, lambda _, lin: LoRALinear.from_dense(lin, cfg.rank, alpha, self.generator))
        return model
