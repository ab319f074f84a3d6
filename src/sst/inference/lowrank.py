"""Singular-value pruning: keep the top-k singular triplets of a layer as two thin matmuls.

y = ((x Vh_k^T) * S_k) U_k^T + b with U_k (out, k), S_k (k,), Vh_k (k, in). The rank k per layer is
the smallest that keeps a share of the energy sum(S_i^2) >= ``energy``, or ceil((1 - ratio) K) of
the K = min(out, in) values for a global prune ``ratio``. A truncated layer whose factors would hold
more numbers than the dense matrix is stored as the dense truncated weight (same function).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from sst.errors import UsageError
from sst.methods.surgery import ALL_LINEAR, DEFAULT_EXCLUDE, check_layer_rank, matches, replace_modules
from sst.spectral.factored import FactoredLinear
from sst.spectral.functional import compose, svd_factors

Factors = tuple[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"]


class LowRankLinear(FactoredLinear):
    """x (..., in) -> ((x Vh^T) * S) U^T + b (..., out) with U (out, rank), S (rank,), Vh (rank, in)."""

    def __init__(
        self, in_features: int, out_features: int, rank: int, use_bias: bool = True,
        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    ):
        super().__init__()
        check_layer_rank(in_features, out_features, rank)
        kw = {"device": device, "dtype": dtype}
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.U = nn.Parameter(torch.empty(out_features, rank, **kw))
        self.S = nn.Parameter(torch.empty(rank, **kw))
        self.Vh = nn.Parameter(torch.empty(rank, in_features, **kw))
        self.bias = nn.Parameter(torch.zeros(out_features, **kw)) if use_bias else None

    @classmethod
    def from_factors(
        cls, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, bias: torch.Tensor | None,
        rank: int, dtype: torch.dtype | None = None,
    ) -> "LowRankLinear":
        """The top ``rank`` triplets of sorted factors U (out, K), S (K,), Vh (K, in)."""
        dtype = dtype or (bias.dtype if bias is not None else S.dtype)
        layer = cls(Vh.shape[1], U.shape[0], rank, use_bias=bias is not None, device=S.device, dtype=dtype)
        with torch.no_grad():
            layer.U.copy_(U[:, :rank])
            layer.S.copy_(S[:rank])
            layer.Vh.copy_(Vh[:rank])
            if bias is not None:
                layer.bias.copy_(bias)
        return layer

    def dense_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The truncated weight U diag(S) Vh -> (out, in), in ``dtype`` (default the factors')."""
        dtype = dtype or self.S.dtype
        return compose(self.U.to(dtype), self.S.to(dtype), self.Vh.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out): two thin matmuls, rank (in + out) multiply-adds per row."""
        return nn.functional.linear(nn.functional.linear(x, self.Vh) * self.S, self.U, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, bias={self.bias is not None}")


# ------------------------------------------------------------------------------- rank selection


def check_ratio(ratio: float) -> float:
    if not 0.0 <= ratio < 1.0:
        raise UsageError(f"prune ratio must be in [0, 1) (the share of singular values dropped), got {ratio}")
    return float(ratio)


def check_energy(energy: float) -> float:
    if not 0.0 < energy <= 1.0:
        raise UsageError(f"kept energy must be in (0, 1] (the share of sum S^2 kept), got {energy}")
    return float(energy)


def rank_for_ratio(k: int, ratio: float) -> int:
    """ceil((1 - ratio) k), at least 1: the number of singular values a prune ``ratio`` keeps."""
    # Round first so that (1 - 0.7) * 10 = 3.0000000000000004 keeps 3, not 4.
    return max(1, math.ceil(round((1.0 - check_ratio(ratio)) * k, 9)))


def rank_for_energy(S: torch.Tensor, energy: float) -> int:
    """Smallest k with sum(S[:k]^2) >= energy * sum(S^2), for S (K,) sorted descending."""
    check_energy(energy)
    power = S.detach().double() ** 2
    total = float(power.sum())
    if total <= 0.0:
        return 1
    kept = torch.cumsum(power, 0) / total
    # A relative tolerance, so energy = 1 does not demand bits the float sum cannot resolve.
    k = int(torch.searchsorted(kept, torch.tensor([energy - 1e-12], dtype=kept.dtype)).item()) + 1
    return min(max(k, 1), S.numel())


def choose_rank(S: torch.Tensor, ratio: float | None = None, energy: float | None = None) -> int:
    """The kept rank for spectrum S (K,) under exactly one of ``ratio`` or ``energy``."""
    if (ratio is None) == (energy is None):
        raise UsageError("give exactly one of ratio (share of singular values dropped) or energy (share of sum S^2 kept)")
    return rank_for_ratio(S.numel(), ratio) if ratio is not None else rank_for_energy(S, energy)


# ------------------------------------------------------------------------------- whole models


def layer_factors(layer: nn.Module, svd_dtype: torch.dtype = torch.float32) -> Factors:
    """Sorted thin SVD of a layer's weight: U (out, K), S (K,), Vh (K, in), bias (out,) or None.

    A FactoredLinear's stored factors (e.g. a SpectralLinear's, which drift from orthonormal
    between re-SVDs and are kept in sampling order) are re-factored through the weight they
    compose, in at least ``svd_dtype`` so that a low-precision layer loses nothing before the SVD.
    """
    if isinstance(layer, FactoredLinear):
        with torch.no_grad():
            weight = layer.dense_weight(torch.promote_types(svd_dtype, _dtype_of(layer)))
    elif isinstance(layer, nn.Linear):
        weight = layer.weight
    else:
        raise TypeError(f"cannot factor a {type(layer).__name__}; expected nn.Linear or a FactoredLinear")
    U, S, Vh = svd_factors(weight.detach(), svd_dtype)
    bias = layer.bias.detach().clone() if layer.bias is not None else None
    return U, S, Vh, bias


def prunable_layers(
    model: nn.Module, target_modules: Sequence[str] = (ALL_LINEAR,),
    exclude_modules: Sequence[str] = DEFAULT_EXCLUDE,
) -> dict[str, nn.Module]:
    """Names -> layers to prune: every FactoredLinear (a method's SpectralLinear / LoRALinear, or
    an already pruned LowRankLinear), and each dense nn.Linear that the method's patterns select
    (so a full-rank run prunes the same layers as an SST run of the same config). The output
    embedding is never selected."""
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    selected = {}
    for name, module in model.named_modules():
        if not name or module is output:
            continue
        if isinstance(module, FactoredLinear):
            selected[name] = module
        elif isinstance(module, nn.Linear):
            wanted = ALL_LINEAR in target_modules or any(matches(name, p) for p in target_modules)
            if wanted and not any(matches(name, e) for e in exclude_modules):
                selected[name] = module
    return selected


@dataclass
class LayerRank:
    """How one layer was pruned: kept rank of its full rank K, kept energy, and the stored form."""

    rank: int
    full_rank: int
    in_features: int
    out_features: int
    energy_kept: float
    factored: bool  # True: LowRankLinear; False: dense truncated weight (factors would be larger)

    def as_dict(self) -> dict:
        return asdict(self)


def prune_model(
    model: nn.Module, ratio: float | None = None, energy: float | None = None,
    target_modules: Sequence[str] = (ALL_LINEAR,), exclude_modules: Sequence[str] = DEFAULT_EXCLUDE,
    factors: dict[str, Factors] | None = None, always_factor: bool = False,
    svd_dtype: torch.dtype = torch.float32,
) -> dict[str, LayerRank]:
    """Truncate every prunable layer (see ``prunable_layers``) in place; -> names -> LayerRank.

    ``factors``: precomputed ``layer_factors`` per name (reused across ratios by the pruning
    study). A layer becomes a LowRankLinear when rank (in + out + 1) < in * out or
    ``always_factor``, else an nn.Linear holding the truncated weight (smaller, same function).
    """
    if ratio is not None:
        check_ratio(ratio)
    if energy is not None:
        check_energy(energy)
    layers = prunable_layers(model, target_modules, exclude_modules)
    if not layers:
        raise UsageError(f"no layer of {type(model).__name__} matches targets {list(target_modules)} "
                         f"minus {list(exclude_modules)}: nothing to prune")
    ranks: dict[str, LayerRank] = {}

    def build(name: str, layer: nn.Module) -> nn.Module:
        U, S, Vh, bias = factors[name] if factors and name in factors else layer_factors(layer, svd_dtype)
        rank = choose_rank(S, ratio, energy)
        out_f, in_f = U.shape[0], Vh.shape[1]
        power = S.double() ** 2
        kept = float(power[:rank].sum() / power.sum()) if float(power.sum()) > 0 else 1.0
        factored = always_factor or rank * (in_f + out_f + 1) < in_f * out_f
        ranks[name] = LayerRank(rank, S.numel(), in_f, out_f, kept, factored)
        dtype = _dtype_of(layer)
        low = LowRankLinear.from_factors(U, S, Vh, bias, rank, dtype=dtype)
        return low if factored else low.to_dense()

    replace_modules(model, layers, build)
    return ranks


def _dtype_of(layer: nn.Module) -> torch.dtype:
    return next(p.dtype for p in layer.parameters())


def lowrank_model(model: nn.Module, ranks: dict[str, dict | LayerRank],
                  layer_cls: type[FactoredLinear] | None = None) -> nn.Module:
    """Give ``model`` empty layers in the shapes ``prune_model`` recorded (to load saved weights).

    ``ranks``: names -> LayerRank (or its dict). Factored layers become ``layer_cls`` (default
    LowRankLinear; any class built as ``(in, out, rank, use_bias, device, dtype)``) of that rank;
    the others stay nn.Linear. Returns ``model`` (modified in place).
    """
    layer_cls = layer_cls or LowRankLinear
    modules = dict(model.named_modules())
    targets = {}
    for name, info in ranks.items():
        info = info if isinstance(info, LayerRank) else LayerRank(**info)
        if name not in modules:
            raise UsageError(f"layer {name!r} of the saved rank description is not in {type(model).__name__}")
        if info.factored:
            targets[name] = (modules[name], info)
    replace_modules(model, {n: m for n, (m, _) in targets.items()}, lambda n, m: layer_cls(
        targets[n][1].in_features, targets[n][1].out_features, targets[n][1].rank,
        use_bias=getattr(m, "bias", None) is not None, device=next(m.parameters()).device, dtype=_dtype_of(m),
    ))
    return model
