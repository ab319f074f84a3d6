"""The FactoredLinear interface: every factored layer class composes the weight its forward uses."""

import pytest
import torch
from torch import nn

from sst.inference.lowrank import LowRankLinear, layer_factors
from sst.methods.lora import LoRALinear
from sst.spectral import FactoredLinear, SpectralLinear


def spectral(lin: nn.Linear) -> SpectralLinear:
    layer = SpectralLinear.from_dense(lin, rank=3)
    with torch.no_grad():  # off orthonormality, as training leaves it between re-SVDs
        layer.U_active.add_(0.2 * torch.randn_like(layer.U_active))
        layer.S.mul_(torch.rand_like(layer.S) + 0.5)
    return layer


def lora(lin: nn.Linear) -> LoRALinear:
    layer = LoRALinear.from_dense(lin, rank=2, alpha=4.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    return layer


def lowrank(lin: nn.Linear) -> LowRankLinear:
    return LowRankLinear.from_factors(*layer_factors(lin), rank=4)


@pytest.mark.parametrize("make", [spectral, lora, lowrank])
@pytest.mark.parametrize("use_bias", [True, False])
def test_to_dense_equals_the_forward_float64(make, use_bias):
    layer = make(nn.Linear(10, 7, bias=use_bias, dtype=torch.float64))
    assert isinstance(layer, FactoredLinear)
    assert (layer.in_features, layer.out_features) == (10, 7)
    assert layer.dense_weight().shape == (7, 10)
    dense = layer.to_dense()
    assert type(dense) is nn.Linear and (dense.bias is None) == (not use_bias)
    x = torch.randn(5, 3, 10, dtype=torch.float64)
    torch.testing.assert_close(dense(x), layer(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make", [spectral, lora, lowrank])
def test_dense_weight_in_a_higher_precision(make):
    layer = make(nn.Linear(10, 7))
    W = layer.dense_weight()
    W64 = layer.dense_weight(torch.float64)
    assert W.dtype == torch.float32 and W64.dtype == torch.float64
    torch.testing.assert_close(W64.float(), W, rtol=1e-5, atol=1e-6)


def test_a_subclass_must_compose_its_weight():
    class Incomplete(FactoredLinear):
        pass

    with pytest.raises(TypeError, match="dense_weight"):
        Incomplete()
