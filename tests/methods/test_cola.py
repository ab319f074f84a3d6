"""CoLA: target linears become x -> A -> SiLU -> B, initialised as CoLA does, and are left unmerged."""

import copy

import pytest
import torch
from torch import nn

import sst
from sst.inference.merge import merge_model, mergeable_layers, unmergeable_layers
from sst.methods.cola_linear import CoLALinear
from sst.spectral import FactoredLinear


def test_targets_become_cola_layers_with_the_formula_count(tiny_mlp):
    model, _ = sst.convert(tiny_mlp, sst.CoLAConfig(rank=3))
    assert isinstance(model.up, CoLALinear) and isinstance(model.mid, CoLALinear)
    assert type(model.lm_head) is nn.Linear
    assert not isinstance(model.up, FactoredLinear)  # no dense weight: the SiLU sits inside
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == (3 * (12 + 20) + 20) + (3 * (20 + 20) + 20) + (20 * 6 + 6)


def test_forward_is_b_silu_a_x_plus_bias():
    layer = CoLALinear.from_dense(nn.Linear(10, 7, dtype=torch.float64), rank=4)
    x = torch.randn(5, 10, dtype=torch.float64)
    expected = nn.functional.silu(x @ layer.A.T) @ layer.B.T + layer.bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    zero = torch.zeros(1, 10, dtype=torch.float64)
    nonlinear = layer(x[:1] + x[1:2]) - layer(x[:1]) - layer(x[1:2]) + layer(zero)
    assert float(nonlinear.detach().abs().max()) > 1e-3  # not a linear map, so no dense merge


def test_initialisation_follows_cola():
    layer = CoLALinear.from_dense(nn.Linear(256, 192), rank=64, generator=torch.Generator().manual_seed(0))
    std = (64 * (256 + 192)) ** -0.25
    for p in (layer.A, layer.B):
        assert float(p.detach().std()) == pytest.approx(std, rel=0.03)
        assert abs(float(p.detach().mean())) < 0.05 * std
    product = layer.B.detach() @ layer.A.detach()
    assert float(product.var()) == pytest.approx(1 / (256 + 192), rel=0.05)


def test_the_bias_is_the_model_s_and_the_generator_decides_the_factors(tiny_mlp):
    bias = tiny_mlp.up.bias.detach().clone()
    a = CoLALinear.from_dense(tiny_mlp.up, rank=3, generator=torch.Generator().manual_seed(5))
    b = CoLALinear.from_dense(tiny_mlp.up, rank=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.bias, bias) and torch.equal(a.A, b.A) and torch.equal(a.B, b.B)


def test_merge_leaves_cola_layers_as_they_are(tiny_mlp):
    plain = copy.deepcopy(tiny_mlp)
    model, _ = sst.convert(tiny_mlp, sst.CoLAConfig(rank=3))
    up = model.up
    x = torch.randn(4, 12, dtype=torch.float64)
    before = model(x)
    assert not mergeable_layers(model)
    merge_model(model)
    assert model.up is up
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    assert unmergeable_layers(model, plain) == ["mid", "up"]


def test_bad_cola_settings_are_rejected_clearly(tiny_mlp):
    with pytest.raises(sst.ConfigError, match="method.rank: must be >= 1"):
        sst.CoLAConfig(rank=0)
    with pytest.raises(sst.TargetError, match="rank 13 is larger than layer 'up'"):
        sst.convert(tiny_mlp, sst.CoLAConfig(rank=13))
    with pytest.raises(ValueError, match=r"rank must be an integer in \[1, 4\]"):
        CoLALinear(4, 6, rank=5)
