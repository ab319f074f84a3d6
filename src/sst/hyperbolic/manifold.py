"""The Lorentz manifold as a small object: the functions of ``sst.hyperbolic.math`` bound to one K.

Lorentz(K) is the hyperboloid -x_0^2 + |x_1:|^2 = -K (curvature -1/K); every method works on the
last dimension of (..., d+1) tensors and forwards to the pure function of the same meaning.
"""

from __future__ import annotations

import torch

from sst.hyperbolic import math as hm


class Lorentz:
    """Hyperboloid model with curvature -1/K (K > 0, default 1)."""

    def __init__(self, K: float = 1.0):
        if isinstance(K, torch.Tensor):
            if K.numel() != 1 or float(K) <= 0:
                raise ValueError(f"curvature parameter K must be a single value > 0, got {K}")
        else:
            hm.check_curvature(K)
        self.K = K

    def __repr__(self) -> str:
        return f"Lorentz(K={float(self.K):g})"

    def inner(self, x: torch.Tensor, y: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
        return hm.minkowski_inner(x, y, keepdim)

    def norm(self, u: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
        return hm.lorentz_norm(u, keepdim)

    def origin(self, dim: int, dtype: torch.dtype | None = None, device: torch.device | None = None) -> torch.Tensor:
        return hm.origin(dim, self.K, dtype, device)

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        return hm.project(x, self.K)

    def proju(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return hm.project_tangent(x, v, self.K)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return hm.expmap(x, u, self.K)

    def expmap0(self, u: torch.Tensor) -> torch.Tensor:
        return hm.expmap0(u, self.K)

    def logmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return hm.logmap(x, y, self.K)

    def logmap0(self, y: torch.Tensor) -> torch.Tensor:
        return hm.logmap0(y, self.K)

    def dist(self, x: torch.Tensor, y: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
        return hm.dist(x, y, self.K, keepdim)

    def sq_dist(self, x: torch.Tensor, y: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
        return hm.sq_dist(x, y, self.K, keepdim)

    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return hm.parallel_transport(x, y, v, self.K)

    def centroid(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return hm.centroid(x, weights, self.K)

    def is_on_manifold(self, x: torch.Tensor, rtol: float | None = None) -> bool:
        return hm.is_on_manifold(x, self.K, rtol)

    def check_on_manifold(self, x: torch.Tensor, rtol: float | None = None, name: str = "x") -> None:
        hm.check_on_manifold(x, self.K, rtol, name)

    def random(self, *shape: int, std: float = 1.0, generator: torch.Generator | None = None,
               dtype: torch.dtype | None = None) -> torch.Tensor:
        """Random points: expmap0 of Gaussian tangent vectors.  shape = (..., d+1)."""
        v = torch.randn(*shape, generator=generator, dtype=dtype) * std
        return hm.expmap0(v, self.K)
