"""HyboNet ("fully hyperbolic") layers in the Lorentz model.

LorentzLinear: z = W x + b (an ordinary nn.Linear), t = sqrt(K) (sigmoid(z_0) exp(scale) + 1.1),
s = z_1: sqrt((t^2 - K) / |z_1:|^2), output (t, s) on the hyperboloid whatever W is.
LorentzCentroid / LorentzAggregation: weighted sum of points rescaled by sqrt(K) / sqrt(|<s, s>_L|).
All layers take batched points (..., d+1) and honour ``sst.hyperbolic.validate_inputs``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sst.hyperbolic import math as hm


class LorentzLinear(nn.Module):
    """Linear map between hyperboloids of manifold dimension in_features -> out_features.

    Input (..., in_features + 1) points, output (..., out_features + 1) points. The only weight is
    ``self.linear`` (nn.Linear(in_features + 1, out_features + 1)); forward calls it as a black box,
    so replacing it by module surgery (spectral, LoRA, ...) needs no special case.
    ``activation`` (e.g. nn.ReLU()) is applied to the input point before the map, HyboNet style:
    the result need not be on the manifold, but the projection below puts the output back.
    ``scale`` is learnable (log of the time scale, initialised to log(scale_init)); the time scale
    exp(scale) is capped at ``max_time_scale`` (beyond the cap it gets no gradient) because float
    error on the hyperboloid grows with t^2. For K != 1, t is multiplied by sqrt(K) (choice: the
    spec's t >= 1.1 only guarantees t^2 > K for K < 1.21; for K = 1 the two agree).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        K: float = 1.0,
        use_bias: bool = True,
        dropout: float = 0.0,
        activation: nn.Module | None = None,
        scale_init: float = 10.0,
        max_time_scale: float = 10.0,
        learn_scale: bool = True,
    ):
        super().__init__()
        hm.check_curvature(K)
        if in_features < 1 or out_features < 1:
            raise ValueError(f"LorentzLinear: dimensions must be >= 1, got {in_features} -> {out_features}")
        self.in_features, self.out_features, self.K = in_features, out_features, K
        self.max_time_scale = max_time_scale
        self.linear = nn.Linear(in_features + 1, out_features + 1, bias=use_bias)
        self.dropout = nn.Dropout(dropout)
        self.activation = activation
        self.scale = nn.Parameter(torch.tensor(math.log(scale_init)), requires_grad=learn_scale)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # HyboNet's initialisation: small uniform weights, no bias, and a zero column for the input
        # time coordinate x_0, which is large (>= sqrt K) and nearly common to all points, so at
        # initialisation it would only add an offset to every output coordinate.
        bound = 1.0 / math.sqrt(self.out_features + 1)
        nn.init.uniform_(self.linear.weight, -bound, bound)
        self.linear.weight[:, 0] = 0.0
        if self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in_features + 1) points -> (..., out_features + 1) points."""
        hm.maybe_check_on_manifold(x, self.K, name="LorentzLinear input")
        if self.activation is not None:
            x = self.activation(x)
        z = self.linear(self.dropout(x))
        if z.dtype in (torch.float16, torch.bfloat16):
            # under autocast the matmul may run in 16 bits; the projection does not, because its
            # error grows with t^2 (t up to 11.1 sqrt K) and 16-bit points drift off the manifold
            z = z.float()
        z_time, z_space = z[..., :1], z[..., 1:]
        time_scale = self.scale.exp().clamp_max(self.max_time_scale)
        time = (torch.sigmoid(z_time) * time_scale + 1.1) * math.sqrt(self.K)
        # |z_1:|^2 is clamped so that an all-zero space part gives a finite (zero) output instead
        # of NaN; t^2 - K > 0 holds by construction (t >= 1.1 sqrt K).
        sq = z_space.pow(2).sum(-1, keepdim=True).clamp_min(1e-8)
        space = z_space * ((time * time - self.K) / sq).sqrt()
        return torch.cat([time, space], dim=-1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, K={self.K}"


class LorentzCentroid(nn.Module):
    """Weighted Lorentz centroid: (..., n, d+1) points and (..., m, n) weights -> (..., m, d+1).

    Weights must be non-negative (e.g. attention probabilities); without weights the result is the
    uniform centroid (..., d+1).
    """

    def __init__(self, K: float = 1.0):
        super().__init__()
        hm.check_curvature(K)
        self.K = K

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        hm.maybe_check_on_manifold(x, self.K, name="LorentzCentroid input")
        return hm.centroid(x, weights, self.K)


class LorentzAggregation(nn.Module):
    """Graph neighbourhood aggregation: each node becomes the Lorentz centroid of its neighbours.

    out_i = normalize(sum_{j -> i} w_ij x_j) over the edges (j -> i) of ``edge_index`` plus a self
    loop, with row-normalised weights w_ij = 1 / deg_i (deg counting the self loop) unless explicit
    ``edge_weight`` is given. Scatter-add with ``index_add`` works on any device without sparse
    tensor support.
    """

    def __init__(self, K: float = 1.0, self_loops: bool = True):
        super().__init__()
        hm.check_curvature(K)
        self.K, self.self_loops = K, self_loops

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (n, d+1) points; edge_index: (2, E) int64 (source, target); edge_weight: (E,) -> (n, d+1)."""
        hm.maybe_check_on_manifold(x, self.K, name="LorentzAggregation input")
        n = x.shape[0]
        if hm.validation_enabled() and edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= n):
            raise ValueError(f"LorentzAggregation: edge_index has node ids outside [0, {n})")
        src, dst = edge_index[0], edge_index[1]
        if edge_weight is None:
            deg = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(
                0, dst, torch.ones_like(dst, dtype=x.dtype)
            )
            if self.self_loops:
                deg = deg + 1
            inv = 1.0 / deg.clamp_min(1.0)
            edge_weight = inv[dst]
            self_weight = inv
        else:
            self_weight = torch.ones(n, dtype=x.dtype, device=x.device)
        out = torch.zeros_like(x).index_add_(0, dst, x[src] * edge_weight.unsqueeze(-1).to(x.dtype))
        if self.self_loops:
            out = out + x * self_weight.unsqueeze(-1)
        return hm.normalize_to_hyperboloid(out, self.K)
