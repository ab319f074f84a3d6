"""FactoredLinear: a linear layer y = x W^T + b whose weight W (out, in) is stored factored.

SpectralLinear (W = U diag(S) Vh), LoRALinear (W = W0 + (alpha / r) B A) and LowRankLinear
(W = U_k diag(S_k) Vh_k) each compose W their own way; merging, pruning and export see only this
interface: the composed weight, and the equivalent plain nn.Linear built from it.
"""

from __future__ import annotations

import abc

import torch
from torch import nn


class FactoredLinear(nn.Module, metaclass=abc.ABCMeta):
    """Base of every factored linear layer: x (..., in) -> x W^T + b (..., out).

    Subclasses set ``in_features``, ``out_features`` and ``bias`` (out,) or None, as nn.Linear
    does, and implement ``dense_weight``; ``to_dense`` is shared.
    """

    in_features: int
    out_features: int
    bias: nn.Parameter | None

    @abc.abstractmethod
    def dense_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The composed weight W (out, in).

        ``dtype`` None: in the layer's own dtype, differentiable w.r.t. its parameters. Else
        composed from the stored factors cast to ``dtype`` (pruning takes the SVD of W in a
        higher precision than a low-precision layer stores).
        """

    def to_dense(self) -> nn.Linear:
        """A plain nn.Linear with weight ``dense_weight()`` (out, in) and the same bias (out,)."""
        with torch.no_grad():
            weight = self.dense_weight()
        dense = nn.Linear(
            self.in_features, self.out_features, bias=self.bias is not None,
            device=weight.device, dtype=weight.dtype,
        )
        with torch.no_grad():
            dense.weight.copy_(weight)
            if self.bias is not None:
                dense.bias.copy_(self.bias)
        return dense
