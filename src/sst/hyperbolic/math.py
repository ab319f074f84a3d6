"""Lorentz (hyperboloid) model of hyperbolic space: pure tensor functions.

Points x in R^{d+1} satisfy <x, x>_L = -x_0^2 + |x_1:|^2 = -K with x_0 > 0 (curvature -1/K, K > 0).
Distance d(x, y) = sqrt(K) arcosh(-<x, y>_L / K); squared Lorentz distance -2K - 2<x, y>_L.
The origin is o = (sqrt(K), 0, ..., 0); tangent vectors at x satisfy <x, u>_L = 0. Every function
works on the last dimension and broadcasts over the leading ones. The conventions (sign of the
inner product, K as the negated "radius squared") are the same as geoopt's ``Lorentz(k=K)``.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from typing import Union

import torch

Curvature = Union[float, torch.Tensor]

# Whether layers check that their inputs lie on the hyperboloid. A ContextVar rather than a plain
# global: each thread (and asyncio task) has its own setting, starting from off.
_VALIDATION: ContextVar[bool] = ContextVar("sst_hyperbolic_validation", default=False)


class InputValidation:
    """Membership checks of layer inputs on the hyperboloid, switched on (or off) at construction.

    Like ``torch.set_grad_enabled``: creating it switches the setting at once; used as a context
    manager it restores the previous setting on exit. Made by ``validate_inputs``.
    """

    def __init__(self, enabled: bool = True):
        self.previous = _VALIDATION.get()
        _VALIDATION.set(bool(enabled))

    def __enter__(self) -> InputValidation:
        return self

    def __exit__(self, *exc) -> None:
        _VALIDATION.set(self.previous)


def validate_inputs(enabled: bool = True) -> InputValidation:
    """Turn input checks on (or off) now; ``with validate_inputs(True): ...`` limits it to a block.

    Checks cost a reduction and a host sync per layer, so they are off by default.
    """
    return InputValidation(enabled)


def validation_enabled() -> bool:
    """Whether input checks are currently on (``validate_inputs``)."""
    return _VALIDATION.get()


def check_curvature(K: Curvature) -> None:
    """Raise ValueError unless K > 0.

    Tensor K (e.g. a learnable curvature) is not checked here: reading its value would force a
    device sync in every call; ``Lorentz`` and the layers check it once at construction.
    """
    if isinstance(K, torch.Tensor):
        return
    if not math.isfinite(K) or K <= 0:
        raise ValueError(f"curvature parameter K must be > 0 (curvature is -1/K), got {K}")


def _sqrt(K: Curvature) -> Curvature:
    return K.sqrt() if isinstance(K, torch.Tensor) else math.sqrt(K)


def _tiny(x: torch.Tensor) -> float:
    # Smallest squared norm we divide by: well above float underflow, well below any real norm.
    return 1e-12 if x.dtype == torch.float64 else 1e-8


def default_rtol(dtype: torch.dtype) -> float:
    """Relative tolerance for membership tests: rounding of <x, x>_L grows with x_0^2."""
    if dtype == torch.float64:
        return 1e-9
    if dtype == torch.float32:
        return 1e-4
    return 5e-2


def minkowski_inner(x: torch.Tensor, y: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """<x, y>_L = -x_0 y_0 + sum_i x_i y_i.  x, y: (..., d+1) -> (...) or (..., 1)."""
    xy = x * y
    out = xy[..., 1:].sum(-1, keepdim=True) - xy[..., :1]
    return out if keepdim else out.squeeze(-1)


def lorentz_norm(u: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """sqrt(<u, u>_L) of tangent vectors (space-like, so <u, u>_L >= 0).  u: (..., d+1).

    The square is clamped at a tiny positive value so that the norm (and its gradient) stays finite
    for zero vectors and for rounding that makes <u, u>_L slightly negative.
    """
    sq = minkowski_inner(u, u, keepdim=keepdim)
    return sq.clamp_min(_tiny(u)).sqrt()


def origin(
    dim: int, K: Curvature = 1.0, dtype: torch.dtype | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """The origin (sqrt(K), 0, ..., 0) of the d-dimensional hyperboloid: shape (dim + 1,)."""
    check_curvature(K)
    o = torch.zeros(dim + 1, dtype=dtype, device=device)
    o[0] = _sqrt(K)
    return o


def project(x: torch.Tensor, K: Curvature = 1.0) -> torch.Tensor:
    """Closest-in-space point on the hyperboloid: keep x_1:, set x_0 = sqrt(K + |x_1:|^2).

    x: (..., d+1) -> (..., d+1). Recomputing the time coordinate from the space coordinates is
    what keeps float32 points on the manifold: it is exact up to one rounding, whereas computing
    x_0 and x_1: independently (cosh and sinh) lets them drift apart as x_0 grows.
    """
    check_curvature(K)
    space = x[..., 1:]
    time = (K + space.pow(2).sum(-1, keepdim=True)).sqrt()
    return torch.cat([time, space], dim=-1)


def project_tangent(x: torch.Tensor, v: torch.Tensor, K: Curvature = 1.0) -> torch.Tensor:
    """Orthogonal projection of an ambient vector v onto the tangent space at x: v + <x, v>_L x / K.

    x, v: (..., d+1) -> (..., d+1); the result u satisfies <x, u>_L = 0.
    """
    check_curvature(K)
    return v + minkowski_inner(x, v, keepdim=True) * x / K


def expmap(x: torch.Tensor, u: torch.Tensor, K: Curvature = 1.0) -> torch.Tensor:
    """exp_x(u) = cosh(|u|_L / sqrt K) x + sqrt K sinh(|u|_L / sqrt K) u / |u|_L.

    x: (..., d+1) points, u: (..., d+1) tangent vectors at x -> (..., d+1) points.
    """
    check_curvature(K)
    sk = _sqrt(K)
    n = lorentz_norm(u, keepdim=True)
    return torch.cosh(n / sk) * x + sk * torch.sinh(n / sk) * (u / n)


def expmap0(u: torch.Tensor, K: Curvature = 1.0) -> torch.Tensor:
    """exp_o(u) at the origin.  u: (..., d+1) with u_0 = 0 (u_0 is ignored) -> (..., d+1).

    Space part sqrt K sinh(|v| / sqrt K) v / |v| with v = u_1:; the time part is recomputed from
    it (see ``project``) rather than taken from cosh, so the result is on the manifold to rounding.
    """
    check_curvature(K)
    sk = _sqrt(K)
    v = u[..., 1:]
    n = v.pow(2).sum(-1, keepdim=True).clamp_min(_tiny(u)).sqrt()
    space = sk * torch.sinh(n / sk) * (v / n)
    return project(torch.cat([torch.zeros_like(u[..., :1]), space], dim=-1), K)


def _arcosh_arg(x: torch.Tensor, y: torch.Tensor, K: Curvature) -> torch.Tensor:
    # -<x, y>_L / K >= 1 in exact arithmetic (equality iff x = y). Cancellation can push it below 1,
    # where arcosh is undefined, and arcosh' = 1/sqrt(z^2 - 1) is infinite at 1: clamping at the
    # next representable number above 1 keeps both the value and the gradient finite.
    z = -minkowski_inner(x, y, keepdim=True) / K
    return z.clamp_min(1.0 + torch.finfo(z.dtype).eps)


def dist(x: torch.Tensor, y: torch.Tensor, K: Curvature = 1.0, keepdim: bool = False) -> torch.Tensor:
    """Geodesic distance sqrt K arcosh(-<x, y>_L / K).  x, y: (..., d+1) -> (...) or (..., 1)."""
    check_curvature(K)
    d = _sqrt(K) * torch.acosh(_arcosh_arg(x, y, K))
    return d if keepdim else d.squeeze(-1)


def sq_dist(x: torch.Tensor, y: torch.Tensor, K: Curvature = 1.0, keepdim: bool = False) -> torch.Tensor:
    """Squared Lorentz distance -2K - 2<x, y>_L (HyboNet's decoder distance).

    x, y: (..., d+1) -> (...) or (..., 1). It is >= 0 in exact arithmetic; clamped at 0 because
    cancellation between close points can make it slightly negative.
    """
    check_curvature(K)
    return (-2 * K - 2 * minkowski_inner(x, y, keepdim=keepdim)).clamp_min(0.0)


def logmap(x: torch.Tensor, y: torch.Tensor, K: Curvature = 1.0) -> torch.Tensor:
    """log_x(y): the tangent vector at x pointing to y with Lorentz norm d(x, y).

    x, y: (..., d+1) points -> (..., d+1) tangent vectors at x. Direction: y + <x, y>_L x / K.
    """
    check_curvature(K)
    direction = y + minkowski_inner(x, y, keepdim=True) * x / K
    return dist(x, y, K, keepdim=True) * direction / lorentz_norm(direction, keepdim=True)


def logmap0(y: torch.Tensor, K: Curvature = 1.0) -> torch.Tensor:
    """log_o(y) at the origin: (0, d(o, y) v / |v|) with v = y_1:.  y: (..., d+1) -> (..., d+1)."""
    check_curvature(K)
    sk = _sqrt(K)
    v = y[..., 1:]
    n = v.pow(2).sum(-1, keepdim=True).clamp_min(_tiny(y)).sqrt()
    # Same clamp as in ``dist``: y_0 / sqrt K >= 1 on the manifold, rounding may go below.
    z = (y[..., :1] / sk).clamp_min(1.0 + torch.finfo(y.dtype).eps)
    d = sk * torch.acosh(z)
    return torch.cat([torch.zeros_like(y[..., :1]), d * v / n], dim=-1)


def parallel_transport(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, K: Curvature = 1.0) -> torch.Tensor:
    """Transport tangent vector v at x to y along the geodesic: v + <y, v>_L / (K - <x, y>_L) (x + y).

    x, y, v: (..., d+1) -> (..., d+1), tangent at y. The denominator is >= 2K, so no clamp is needed.
    """
    check_curvature(K)
    coef = minkowski_inner(y, v, keepdim=True) / (K - minkowski_inner(x, y, keepdim=True))
    return v + coef * (x + y)


def normalize_to_hyperboloid(s: torch.Tensor, K: Curvature = 1.0) -> torch.Tensor:
    """Rescale a time-like vector onto the hyperboloid: s sqrt K / sqrt(|<s, s>_L|).

    s: (..., d+1) -> (..., d+1). For a positive combination of points s is time-like
    (<s, s>_L < 0, s_0 > 0), so this is the Lorentz centroid. |<s, s>_L| is clamped away from zero,
    which only matters for degenerate (all-zero) weights.
    """
    check_curvature(K)
    sq = minkowski_inner(s, s, keepdim=True).abs().clamp_min(_tiny(s))
    return s * (_sqrt(K) / sq.sqrt())


def centroid(x: torch.Tensor, weights: torch.Tensor | None = None, K: Curvature = 1.0) -> torch.Tensor:
    """Lorentz centroid of weighted points: normalize_to_hyperboloid(sum_j w_j x_j).

    x: (..., n, d+1) points; weights: (..., m, n) non-negative (or None: one uniform centroid).
    Returns (..., m, d+1), or (..., d+1) when weights is None.
    """
    if weights is None:
        return normalize_to_hyperboloid(x.mean(-2), K)
    return normalize_to_hyperboloid(weights @ x, K)


def manifold_residual(x: torch.Tensor, K: Curvature = 1.0) -> torch.Tensor:
    """Relative error |<x, x>_L + K| / (x_0^2 + |x_1:|^2) of each point.  x: (..., d+1) -> (...).

    Dividing by the squared Euclidean norm (>= K) makes the test scale-free: float error of
    <x, x>_L is proportional to x_0^2, so an absolute tolerance would fail for far-away points.
    """
    scale = x.pow(2).sum(-1)
    return (minkowski_inner(x, x) + K).abs() / scale.clamp_min(_tiny(x))


def is_on_manifold(x: torch.Tensor, K: Curvature = 1.0, rtol: float | None = None) -> bool:
    """True iff every point has x_0 > 0 and relative residual <= rtol (default by dtype)."""
    check_curvature(K)
    rtol = default_rtol(x.dtype) if rtol is None else rtol
    if x.shape[-1] < 2:
        return False
    ok = (x[..., 0] > 0) & (manifold_residual(x, K) <= rtol)
    return bool(ok.all())


def check_on_manifold(x: torch.Tensor, K: Curvature = 1.0, rtol: float | None = None, name: str = "x") -> None:
    """Raise ValueError naming ``name`` unless every point of x (..., d+1) lies on the hyperboloid."""
    check_curvature(K)
    rtol = default_rtol(x.dtype) if rtol is None else rtol
    if x.shape[-1] < 2:
        raise ValueError(f"{name}: expected points of shape (..., d+1) with d >= 1, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    residual = manifold_residual(x, K)
    bad = (x[..., 0] <= 0) | (residual > rtol)
    if bool(bad.any()):
        raise ValueError(
            f"{name}: {int(bad.sum())} of {bad.numel()} points are off the hyperboloid "
            f"-x0^2 + |x1:|^2 = -K (K={float(K)}): max relative residual {float(residual.max()):.3g} "
            f"> rtol {rtol:.3g}, min x0 {float(x[..., 0].min()):.3g}"
        )


def maybe_check_on_manifold(x: torch.Tensor, K: Curvature = 1.0, name: str = "x") -> None:
    """``check_on_manifold`` when ``validate_inputs`` is on; a no-op otherwise."""
    if _VALIDATION.get():
        check_on_manifold(x, K, name=name)
