"""Lorentz-model maths: invariants in float64, geoopt agreement, float32 stability, validation."""

import math
import threading

import pytest
import torch

from sst.hyperbolic import InputValidation, Lorentz, validate_inputs, validation_enabled
from sst.hyperbolic import math as hm

D = torch.float64


def points(n, d=5, K=1.0, std=1.0, dtype=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return hm.expmap0(torch.randn(n, d + 1, generator=g, dtype=dtype) * std, K)


def tangent(x, K, seed=1):
    g = torch.Generator().manual_seed(seed)
    return hm.project_tangent(x, torch.randn(x.shape, generator=g, dtype=x.dtype), K)


@pytest.mark.parametrize("K", [0.5, 1.0, 2.3])
def test_expmap0_and_project_are_on_manifold(K):
    x = points(64, K=K, std=2.0)
    # relative residual: the absolute error of <x,x> grows with x0^2 (x0 reaches ~1e4 here)
    assert hm.manifold_residual(x, K).max() < 1e-14
    assert (x[:, 0] > 0).all()
    y = hm.project(torch.randn(10, 4, dtype=D), K)
    assert hm.is_on_manifold(y, K)
    o = hm.origin(4, K, dtype=D)
    assert torch.allclose(o, torch.tensor([math.sqrt(K), 0, 0, 0, 0], dtype=D))


def test_minkowski_inner_and_norm_by_hand():
    x = torch.tensor([2.0, 1.0, 3.0], dtype=D)
    y = torch.tensor([1.0, -2.0, 0.5], dtype=D)
    assert hm.minkowski_inner(x, y).item() == pytest.approx(-2.0 - 2.0 + 1.5)
    u = torch.tensor([1.0, 2.0, 2.0], dtype=D)
    assert hm.lorentz_norm(u).item() == pytest.approx(math.sqrt(-1 + 8))
    assert hm.minkowski_inner(x, y, keepdim=True).shape == (1,)


@pytest.mark.parametrize("K", [0.7, 1.0, 3.0])
def test_expmap_logmap_invert_at_origin_and_at_point(K):
    x = points(32, K=K, seed=0)
    y = points(32, K=K, seed=1)
    # at the origin: logmap0(expmap0(u)) = u for tangent u (u_0 = 0)
    u = torch.randn(32, 6, dtype=D)
    u[:, 0] = 0
    assert torch.allclose(hm.logmap0(hm.expmap0(u, K), K), u, atol=1e-9)
    assert torch.allclose(hm.expmap0(hm.logmap0(y, K), K), y, atol=1e-9)
    # at a point
    v = tangent(x, K)
    assert torch.allclose(hm.minkowski_inner(x, v), torch.zeros(32, dtype=D), atol=1e-9)
    assert torch.allclose(hm.logmap(x, hm.expmap(x, v, K), K), v, atol=1e-8)
    assert torch.allclose(hm.expmap(x, hm.logmap(x, y, K), K), y, atol=1e-8)
    # the log is tangent and its norm is the distance
    w = hm.logmap(x, y, K)
    assert torch.allclose(hm.minkowski_inner(x, w), torch.zeros(32, dtype=D), atol=1e-8)
    assert torch.allclose(hm.lorentz_norm(w), hm.dist(x, y, K), atol=1e-9)
    # logmap at the origin agrees with the general logmap
    o = hm.origin(5, K, dtype=D).expand(32, 6)
    assert torch.allclose(hm.logmap(o, y, K), hm.logmap0(y, K), atol=1e-9)


@pytest.mark.parametrize("K", [0.5, 1.0, 2.0])
def test_distance_properties(K):
    x, y, z = points(40, K=K, seed=0), points(40, K=K, seed=1), points(40, K=K, seed=2)
    assert torch.allclose(hm.dist(x, y, K), hm.dist(y, x, K), atol=1e-12)
    # arcosh amplifies rounding near 1: -<x,x>/K = 1 + 1e-12 gives a distance of ~1.4e-6
    assert hm.dist(x, x, K).abs().max() < 1e-5
    assert (hm.dist(x, z, K) <= hm.dist(x, y, K) + hm.dist(y, z, K) + 1e-9).all()
    # distance from the origin is the tangent norm that expmap0 was given
    u = torch.zeros(3, 6, dtype=D)
    u[:, 1] = torch.tensor([0.1, 1.0, 4.0], dtype=D)
    o = hm.origin(5, K, dtype=D)
    assert torch.allclose(hm.dist(o, hm.expmap0(u, K), K), u[:, 1], atol=1e-9)
    # squared Lorentz distance -2K - 2<x,y> = 2K (cosh(d / sqrt K) - 1)
    d = hm.dist(x, y, K)
    assert torch.allclose(hm.sq_dist(x, y, K), 2 * K * (torch.cosh(d / math.sqrt(K)) - 1), rtol=1e-9)
    assert (hm.sq_dist(x, x, K) >= 0).all()


def test_float32_distance_is_finite_with_finite_gradients():
    x = points(16, std=1.0, dtype=torch.float32).requires_grad_()
    # rounding puts -<x,x>/K below 1 for some points (clamped), above 1 for others: the
    # self-distance of points with x0 up to ~50 is a few 1e-3 in float32, not 0
    d = hm.dist(x, x.detach().clone())
    assert torch.isfinite(d).all() and d.max() < 2e-2
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_parallel_transport_preserves_tangency_and_norm():
    K = 1.7
    x, y = points(20, K=K, seed=3), points(20, K=K, seed=4)
    v, w = tangent(x, K, seed=5), tangent(x, K, seed=6)
    pv, pw = hm.parallel_transport(x, y, v, K), hm.parallel_transport(x, y, w, K)
    assert torch.allclose(hm.minkowski_inner(y, pv), torch.zeros(20, dtype=D), atol=1e-9)
    assert torch.allclose(hm.minkowski_inner(pv, pw), hm.minkowski_inner(v, w), atol=1e-8)
    # transporting log_x(y) to y gives -log_y(x)
    assert torch.allclose(hm.parallel_transport(x, y, hm.logmap(x, y, K), K), -hm.logmap(y, x, K), atol=1e-8)


@pytest.mark.parametrize("K", [0.5, 1.0, 2.0])
def test_centroid_on_manifold_and_fixed_point(K):
    x = points(7, K=K, std=1.5)
    w = torch.rand(3, 7, dtype=D)
    c = hm.centroid(x, w, K)
    assert c.shape == (3, 6) and hm.is_on_manifold(c, K)
    assert hm.is_on_manifold(hm.centroid(x, None, K), K)
    # the centroid of copies of one point is that point; one-hot weights select a point
    assert torch.allclose(hm.centroid(x[:1].expand(4, 6), None, K), x[0], atol=1e-10)
    assert torch.allclose(hm.centroid(x, torch.eye(7, dtype=D)[2:3] * 5.0, K)[0], x[2], atol=1e-10)
    # spec formula: sum, then multiply by sqrt(K) / sqrt(|<s, s>|)
    s = w[0] @ x
    expect = s * math.sqrt(K) / hm.minkowski_inner(s, s).abs().sqrt()
    assert torch.allclose(c[0], expect, atol=1e-12)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_nonpositive_curvature_errors(bad):
    with pytest.raises(ValueError, match="K must be > 0"):
        hm.dist(points(2), points(2), bad)
    with pytest.raises(ValueError, match="K must be > 0"):
        hm.expmap0(torch.zeros(2, 3), bad)
    with pytest.raises(ValueError, match="K"):
        Lorentz(bad)


def test_membership_check_relative_tolerance_and_errors():
    # far points in float32: absolute error of <x,x> is large, the relative residual is not
    far = points(100, std=2.0, dtype=torch.float32)
    assert (hm.minkowski_inner(far, far) + 1).abs().max() > 1e-3
    assert hm.is_on_manifold(far, 1.0)
    hm.check_on_manifold(far, 1.0)
    off = far.clone()
    off[3, 0] *= 1.01  # relative residual ~1e-2 >> rtol 1e-4
    assert not hm.is_on_manifold(off, 1.0)
    with pytest.raises(ValueError, match="feats: 1 of 100 points are off the hyperboloid"):
        hm.check_on_manifold(off, 1.0, name="feats")
    lower_sheet = -points(2)
    with pytest.raises(ValueError, match="off the hyperboloid"):
        hm.check_on_manifold(lower_sheet, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        hm.check_on_manifold(torch.full((2, 3), float("nan")), 1.0)


def test_validate_inputs_switch_and_context():
    assert not validation_enabled()
    with validate_inputs(True):
        assert validation_enabled()
        with validate_inputs(False):
            assert not validation_enabled()
        assert validation_enabled()
        with pytest.raises(ValueError, match="layer input"):
            hm.maybe_check_on_manifold(torch.ones(2, 3), 1.0, name="layer input")
    assert not validation_enabled()
    hm.maybe_check_on_manifold(torch.ones(2, 3), 1.0)  # off: no check


def test_validate_inputs_switches_at_once_and_per_thread():
    switch = validate_inputs(True)  # like torch.set_grad_enabled: on without a with block
    try:
        assert isinstance(switch, InputValidation) and validation_enabled()
        seen = []
        thread = threading.Thread(target=lambda: seen.append(validation_enabled()))
        thread.start()
        thread.join()
        assert seen == [False]  # another thread keeps its own setting, off by default
    finally:
        switch.__exit__(None, None, None)
    assert not validation_enabled()


def test_manifold_class_forwards_to_functions():
    M = Lorentz(2.0)
    x, y = M.random(5, 4, dtype=D), M.random(5, 4, std=0.5, dtype=D)
    assert M.is_on_manifold(x)
    assert torch.allclose(M.dist(x, y), hm.dist(x, y, 2.0))
    assert torch.allclose(M.logmap(x, M.expmap(x, M.proju(x, y))), M.proju(x, y), atol=1e-8)
    assert repr(M) == "Lorentz(K=2)"


@pytest.mark.parametrize("K", [0.5, 1.0, 2.5])
def test_agrees_with_geoopt(K):
    """geoopt's Lorentz(k) uses the same conventions: <x,y> = -x0 y0 + <x1:, y1:>, points with
    <x,x> = -k, dist = sqrt(k) arcosh(-<x,y>/k). Its norm clamps <u,u> at 1e-8 (so agreement is
    only checked for non-tiny vectors) and its expmap/expmap0 re-project by default."""
    geoopt = pytest.importorskip("geoopt")
    M = geoopt.manifolds.Lorentz(k=torch.tensor(K, dtype=D))  # a float k would be stored in float32
    x, y = points(16, K=K, seed=0), points(16, K=K, seed=1)
    v = tangent(x, K)
    u0 = torch.randn(16, 6, dtype=D)
    u0[:, 0] = 0
    tol = dict(atol=1e-8, rtol=1e-8)
    assert torch.allclose(hm.minkowski_inner(x, y), M.inner(None, x, y), **tol)
    assert torch.allclose(hm.dist(x, y, K), M.dist(x, y), **tol)
    assert torch.allclose(hm.expmap(x, v, K), M.expmap(x, v, project=False), **tol)
    assert torch.allclose(hm.expmap0(u0, K), M.expmap0(u0), **tol)
    assert torch.allclose(hm.logmap(x, y, K), M.logmap(x, y), atol=1e-7)
    assert torch.allclose(hm.logmap0(y, K), M.logmap0(y), atol=1e-7)
    raw = torch.randn(16, 6, dtype=D)
    assert torch.allclose(hm.project(raw, K), M.projx(raw), **tol)
    assert torch.allclose(hm.project_tangent(x, raw, K), M.proju(x, raw), **tol)
    assert torch.allclose(hm.parallel_transport(x, y, v, K), M.transp(x, y, v), atol=1e-7)
