"""SLTrainLinear: a weight W = (alpha / r) B A + S, low rank plus sparse on a fixed random support.

B (out, r) starts at zero, A (r, in) Kaiming-uniform; S (out, in) is zero except at ``support``,
nnz = max(1, floor(density out in)) flat indices into W drawn once at random and kept (a buffer,
saved with the weights), where it holds the trainable ``values`` (nnz,). The forward composes W
with one index_add (pure PyTorch): y = x W^T + b, and W is also the exact dense merge.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sst.methods.scratch import from_scratch
from sst.methods.surgery import check_layer_rank
from sst.spectral.factored import FactoredLinear


def support_size(in_features: int, out_features: int, density: float) -> int:
    """nnz = max(1, floor(density out in)), rounded first so 0.29 * 100 keeps 29 entries, not 28."""
    return max(1, math.floor(round(density * in_features * out_features, 9)))


class SLTrainLinear(FactoredLinear):
    """x (..., in) -> x ((alpha / r) B A + S)^T + b (..., out).

    Parameters: ``A`` (r, in), ``B`` (out, r), ``values`` (nnz,), ``bias`` (out,) or None; buffer
    ``support`` (nnz,) int64, sorted flat indices i * in + j of the entries S[i, j] that train.
    """

    def __init__(
        self, in_features: int, out_features: int, rank: int, density: float, alpha: float,
        use_bias: bool = True, device=None, dtype=None,
    ):
        super().__init__()
        check_layer_rank(in_features, out_features, rank)
        if not 0.0 < density < 1.0:
            raise ValueError(f"density must be in (0, 1) (the share of W's entries that S holds), got {density}")
        kw = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.rank, self.density, self.alpha = rank, density, alpha
        nnz = support_size(in_features, out_features, density)
        self.A = nn.Parameter(torch.empty(rank, in_features, **kw))
        self.B = nn.Parameter(torch.zeros(out_features, rank, **kw))
        self.values = nn.Parameter(torch.zeros(nnz, **kw))
        self.register_buffer("support", torch.zeros(nnz, dtype=torch.long, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, **kw)) if use_bias else None

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def from_dense(
        cls, linear: nn.Linear, rank: int, density: float, alpha: float, generator: torch.Generator | None = None,
    ) -> "SLTrainLinear":
        """A fresh SLTrain layer of ``linear``'s shape (training from scratch: only its bias is kept)."""
        layer = cls(
            linear.in_features, linear.out_features, rank, density, alpha,
            use_bias=linear.bias is not None, device=linear.weight.device, dtype=linear.weight.dtype,
        )
        return from_scratch(layer, linear, generator)

    @torch.no_grad()
    def reset_parameters_(self, generator: torch.Generator | None = None) -> None:
        """A and the sparse values <- U(-1/sqrt(in), 1/sqrt(in)), B <- 0, a new random support."""
        bound = 1.0 / math.sqrt(self.in_features)
        nnz = self.values.numel()
        support = torch.randperm(self.in_features * self.out_features, generator=generator)[:nnz].sort().values
        self.support.copy_(support)
        self.A.copy_(torch.empty(self.A.shape).uniform_(-bound, bound, generator=generator))
        self.values.copy_(torch.empty(nnz).uniform_(-bound, bound, generator=generator))
        self.B.zero_()

    def sparse_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """S (out, in): ``values`` at ``support``, zero elsewhere."""
        dtype = dtype or self.values.dtype
        flat = torch.zeros(self.out_features * self.in_features, dtype=dtype, device=self.values.device)
        return flat.index_add(0, self.support, self.values.to(dtype)).view(self.out_features, self.in_features)

    def dense_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """W = (alpha / r) B A + S -> (out, in), in ``dtype`` (default the factors')."""
        dtype = dtype or self.A.dtype
        low = self.scaling * (self.B.to(dtype) @ self.A.to(dtype))
        # under autocast the product comes out in 16 bits; the values join it in that precision
        return low.view(-1).index_add(0, self.support, self.values.to(low.dtype)).view_as(low)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.dense_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"density={self.density}, nnz={self.values.numel()}, alpha={self.alpha}")
