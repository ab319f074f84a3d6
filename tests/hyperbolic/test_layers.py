"""HyboNet layers: outputs on the hyperboloid for any weights, the spec formula, surgery-friendliness."""

import math

import pytest
import torch
from torch import nn

from sst.hyperbolic import LorentzAggregation, LorentzCentroid, LorentzLinear, validate_inputs
from sst.hyperbolic import math as hm

D = torch.float64


def points(shape, K=1.0, std=1.0, dtype=D):
    return hm.expmap0(torch.randn(*shape, dtype=dtype) * std, K)


@pytest.mark.parametrize("K", [0.5, 1.0, 4.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lorentz_linear_output_on_manifold_for_random_weights(K, dtype):
    layer = LorentzLinear(6, 9, K=K, activation=nn.ReLU()).to(dtype)
    for trial in range(5):
        with torch.no_grad():  # arbitrary weights, not just the initialisation
            layer.linear.weight.normal_(0, 3.0)
            layer.linear.bias.normal_(0, 3.0)
            layer.scale.fill_(math.log(0.5 + trial * 3))
        y = layer(points((4, 3, 7), K, std=2.0, dtype=dtype))
        assert y.shape == (4, 3, 10)
        assert hm.is_on_manifold(y, K), hm.manifold_residual(y, K).max()


def test_lorentz_linear_matches_spec_formula():
    K = 1.0
    layer = LorentzLinear(4, 3, K=K).double()
    with torch.no_grad():
        layer.linear.weight.normal_()
        layer.scale.fill_(math.log(2.0))
    x = points((5, 5))
    z = x @ layer.linear.weight.T + layer.linear.bias
    t = torch.sigmoid(z[:, :1]) * 2.0 + 1.1
    s = z[:, 1:] * torch.sqrt((t**2 - K) / (z[:, 1:] ** 2).sum(-1, keepdim=True))
    assert torch.allclose(layer(x), torch.cat([t, s], -1), atol=1e-12)
    # exp(scale) is capped at max_time_scale (10): t stays in [1.1, 11.1] sqrt(K)
    with torch.no_grad():
        layer.scale.fill_(math.log(1e4))
    assert layer(x)[:, 0].max() <= 11.1 + 1e-9


def test_lorentz_linear_calls_inner_linear_as_black_box():
    class Doubling(nn.Module):  # a stand-in for a surgery replacement (no .weight attribute)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return 2 * self.inner(x)

    layer = LorentzLinear(3, 4).double()
    with torch.no_grad():
        layer.linear.weight.normal_()
    x = points((6, 4))
    inner = layer.linear
    layer.linear = Doubling(inner)
    y = layer(x)
    layer.linear = inner
    # a different inner map changes the output but the output is still on the manifold
    assert hm.is_on_manifold(y) and not torch.allclose(y, layer(x))
    assert [n for n, m in layer.named_modules() if isinstance(m, nn.Linear)] == ["linear"]


def test_lorentz_linear_init_and_gradients():
    layer = LorentzLinear(5, 7, use_bias=True)
    assert layer.linear.weight.shape == (8, 6)
    assert torch.all(layer.linear.weight[:, 0] == 0) and torch.all(layer.linear.bias == 0)
    assert layer.scale.item() == pytest.approx(math.log(10))
    y = layer(points((10, 6), dtype=torch.float32))
    y.pow(2).sum().backward()
    assert torch.isfinite(layer.linear.weight.grad).all() and layer.linear.weight.grad.abs().sum() > 0
    assert LorentzLinear(2, 2, use_bias=False).linear.bias is None
    with pytest.raises(ValueError, match="K must be > 0"):
        LorentzLinear(2, 2, K=0.0)


def test_centroid_module_batched():
    x = points((2, 5, 4))
    w = torch.softmax(torch.randn(2, 3, 5, dtype=D), -1)
    c = LorentzCentroid(2.0)(hm.expmap0(hm.logmap0(x), 2.0), w)
    assert c.shape == (2, 3, 4) and hm.is_on_manifold(c, 2.0)


def test_aggregation_is_row_normalised_centroid_with_self_loops():
    K = 1.5
    x = points((4, 3), K)
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])  # path 0-1-2, node 3 isolated
    out = LorentzAggregation(K)(x, edge_index)
    assert hm.is_on_manifold(out, K)
    assert torch.allclose(out[0], hm.centroid(x[[0, 1]], None, K), atol=1e-12)
    assert torch.allclose(out[1], hm.centroid(x[[0, 1, 2]], None, K), atol=1e-12)
    assert torch.allclose(out[3], x[3], atol=1e-12)  # only its self loop
    weighted = LorentzAggregation(K)(x, edge_index, torch.tensor([1.0, 3.0, 0.0, 0.0], dtype=D))
    # explicit weights per edge (source -> target), self loops weigh 1: node 0 gets 3 x1 + x0
    assert torch.allclose(weighted[0], hm.normalize_to_hyperboloid(3 * x[1] + x[0], K), atol=1e-12)
    assert torch.allclose(weighted[1], hm.normalize_to_hyperboloid(x[0] + x[1], K), atol=1e-12)


def test_validation_mode_catches_off_manifold_inputs():
    layer = LorentzLinear(3, 2)
    bad = torch.randn(5, 4)
    layer(bad)  # validation off: no check (the output is still on the manifold)
    with validate_inputs(True):
        layer(points((5, 4), dtype=torch.float32))
        with pytest.raises(ValueError, match="LorentzLinear input"):
            layer(bad)
        with pytest.raises(ValueError, match="LorentzCentroid input"):
            LorentzCentroid()(bad)
        with pytest.raises(ValueError, match="LorentzAggregation input"):
            LorentzAggregation()(bad, torch.zeros(2, 0, dtype=torch.long))
        with pytest.raises(ValueError, match="node ids outside"):
            LorentzAggregation()(points((2, 3)), torch.tensor([[0], [5]]))


def test_projection_runs_in_float32_under_bf16_autocast():
    layer = LorentzLinear(8, 8)
    x = points((32, 9), dtype=torch.float32, std=1.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.float32 and hm.is_on_manifold(y)
