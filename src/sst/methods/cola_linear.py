"""CoLALinear: a low-rank bottleneck with a nonlinearity inside, y = B SiLU(A x) + b (CoLA).

A (r, in) and B (out, r) start as N(0, 1) r^(-1/4) (in + out)^(-1/4), CoLA's
initialisation (each entry of the product B A then has variance about 1 / (in + out)). The
SiLU makes the layer no linear map: it has no dense weight and merges only to its own two matrices.
"""

from __future__ import annotations

import torch
from torch import nn

from sst.methods.scratch import from_scratch
from sst.methods.surgery import check_layer_rank


class CoLALinear(nn.Module):
    """x (..., in) -> SiLU(x A^T) B^T + b (..., out) with A (rank, in), B (out, rank), b (out,) or None."""

    def __init__(
        self, in_features: int, out_features: int, rank: int, use_bias: bool = True, device=None, dtype=None,
    ):
        super().__init__()
        check_layer_rank(in_features, out_features, rank)
        kw = {"device": device, "dtype": dtype}
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.A = nn.Parameter(torch.empty(rank, in_features, **kw))
        self.B = nn.Parameter(torch.empty(out_features, rank, **kw))
        self.bias = nn.Parameter(torch.zeros(out_features, **kw)) if use_bias else None

    @classmethod
    def from_dense(cls, linear: nn.Linear, rank: int, generator: torch.Generator | None = None) -> "CoLALinear":
        """A fresh CoLA layer of ``linear``'s shape (training from scratch: only its bias is kept)."""
        layer = cls(linear.in_features, linear.out_features, rank, use_bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
        return from_scratch(layer, linear, generator)

    @torch.no_grad()
    def reset_parameters_(self, generator: torch.Generator | None = None) -> None:
        """A, B <- N(0, 1) r^(-1/4) (in + out)^(-1/4)."""
        std = (self.rank * (self.in_features + self.out_features)) ** -0.25
        for p in (self.A, self.B):
            p.copy_(torch.randn(p.shape, generator=generator) * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = nn.functional.silu(nn.functional.linear(x, self.A))
        return nn.functional.linear(hidden, self.B, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"bias={self.bias is not None}")
