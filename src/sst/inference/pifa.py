"""PIFA (Pivoting Factorization, ICML 2025): a rank-k layer stored as k pivot rows and coefficients.

For W (out, in) of rank k, k linearly independent rows span its row space: W[pivots] = P (k, in)
and W[others] = C P with C (out - k, k). Then y = x W^T is y[pivots] = x P^T and y[others] =
(x P^T) C^T: k in + (out - k) k numbers, k^2 fewer than the low-rank layer's k (in + out), and
exact up to rounding. Pivots: LU with partial pivoting of the left factor U (out, k) of W = U R.
"""

from __future__ import annotations

import torch
from torch import nn

from sst.inference.lowrank import LayerRank, LowRankLinear, lowrank_model
from sst.methods.surgery import check_layer_rank, replace_modules
from sst.spectral.factored import FactoredLinear


def pivot_rows(left: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pivots of a full-column-rank factor ``left`` (out, k) -> (pivots (k,), others (out-k,), C (out-k, k)).

    LU with partial pivoting gives left[perm] = L R with L unit lower trapezoidal (|L| <= 1); the
    first k rows of perm are the pivots and left[others] = C left[pivots] with C = L21 L11^-1.
    Computed in float64: C is then exact to the conditioning of left[pivots].
    """
    out, k = left.shape
    if k > out:
        raise ValueError(f"a rank-{k} factor needs at least {k} rows, got {out}")
    LU, swaps = torch.linalg.lu_factor(left.detach().double())
    perm = list(range(out))
    for i, j in enumerate((swaps - 1).tolist()):  # LAPACK's sequential row swaps, 1-based
        perm[i], perm[j] = perm[j], perm[i]
    perm = torch.tensor(perm, device=left.device)
    L = torch.tril(LU, diagonal=-1) + torch.eye(out, k, dtype=LU.dtype, device=LU.device)
    C = torch.linalg.solve_triangular(L[:k], L[k:], upper=False, left=False, unitriangular=True)
    return perm[:k], perm[k:], C


class PIFALinear(FactoredLinear):
    """x (..., in) -> y (..., out) with y[pivots] = x P^T, y[others] = (x P^T) C^T, plus bias.

    Parameters ``P`` (rank, in), ``C`` (out - rank, rank), ``bias`` (out,) or None; buffer
    ``order`` (out,) int64 puts the concatenation [pivots, others] back into output order.
    """

    def __init__(
        self, in_features: int, out_features: int, rank: int, use_bias: bool = True,
        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    ):
        super().__init__()
        check_layer_rank(in_features, out_features, rank)
        kw = {"device": device, "dtype": dtype}
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.P = nn.Parameter(torch.empty(rank, in_features, **kw))
        self.C = nn.Parameter(torch.empty(out_features - rank, rank, **kw))
        self.register_buffer("order", torch.arange(out_features, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, **kw)) if use_bias else None

    @classmethod
    def from_factors(
        cls, left: torch.Tensor, right: torch.Tensor, bias: torch.Tensor | None = None,
        dtype: torch.dtype | None = None,
    ) -> "PIFALinear":
        """The PIFA form of W = left (out, k) @ right (k, in), with ``left`` of full column rank."""
        pivots, others, C = pivot_rows(left)
        dtype = dtype or right.dtype
        layer = cls(right.shape[1], left.shape[0], left.shape[1], use_bias=bias is not None,
                    device=right.device, dtype=dtype)
        with torch.no_grad():
            layer.P.copy_(left.detach().double()[pivots] @ right.detach().double())
            layer.C.copy_(C)
            layer.order.copy_(torch.argsort(torch.cat([pivots, others])))
            if bias is not None:
                layer.bias.copy_(bias)
        return layer

    @classmethod
    def from_lowrank(cls, layer: LowRankLinear) -> "PIFALinear":
        """The same function as ``layer`` (W = U diag(S) Vh), in k^2 fewer numbers."""
        S = layer.S.detach().double()
        return cls.from_factors(layer.U, S[:, None] * layer.Vh.detach().double(), layer.bias, dtype=layer.S.dtype)

    def dense_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """W (out, in): the rows [P; C P] put back into output order, in ``dtype`` (default P's)."""
        dtype = dtype or self.P.dtype
        P = self.P.to(dtype)
        return torch.cat([P, self.C.to(dtype) @ P]).index_select(0, self.order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out): rank in + (out - rank) rank multiply-adds per row, then a gather."""
        pivot = nn.functional.linear(x, self.P)
        y = torch.cat([pivot, nn.functional.linear(pivot, self.C)], dim=-1).index_select(-1, self.order)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, bias={self.bias is not None}")


def pifa_from_lowrank(model: nn.Module, ranks: dict[str, LayerRank]) -> dict[str, LayerRank]:
    """Turn every LowRankLinear named in ``ranks`` into PIFA (rank < min side) or dense (full rank).

    A full-rank PIFA layer would hold as many numbers as the dense weight, so it is stored dense.
    Returns the ranks with ``factored`` meaning "stored as PIFALinear".
    """
    modules = dict(model.named_modules())
    layers = {n: modules[n] for n in ranks if isinstance(modules.get(n), LowRankLinear)}
    replace_modules(model, layers, lambda n, layer: (
        PIFALinear.from_lowrank(layer) if ranks[n].rank < ranks[n].full_rank else layer.to_dense()))
    return {n: LayerRank(**{**r.as_dict(), "factored": r.rank < r.full_rank and n in layers})
            for n, r in ranks.items()}


def pifa_model(model: nn.Module, ranks: dict[str, dict | LayerRank]) -> nn.Module:
    """Give ``model`` empty PIFALinear layers in the shapes ``ranks`` records (to load saved weights)."""
    return lowrank_model(model, ranks, PIFALinear)
