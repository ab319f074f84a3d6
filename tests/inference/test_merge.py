"""Merging SST / LoRA / ReLoRA* / low-rank layers to nn.Linear keeps the model's function exactly."""

from __future__ import annotations

import torch
from torch import nn

from sst.inference.lowrank import LowRankLinear, layer_factors
from sst.inference.merge import merge_model, mergeable_layers
from sst.methods import LoRAConfig, ReLoRAConfig, SSTConfig, build_method
from sst.methods.lora import LoRALinear
from sst.spectral.linear import SpectralLinear


class Net(nn.Module):
    """x (B, 6) -> (B, 5) through two targeted blocks and an excluded head."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(6, 10)
        self.down = nn.Linear(10, 6, bias=False)
        self.lm_head = nn.Linear(6, 5)

    def forward(self, x):
        return self.lm_head(torch.tanh(self.down(torch.relu(self.up(x)))))


def make(dtype=torch.float64) -> Net:
    torch.manual_seed(0)
    return Net().to(dtype)


def test_sst_merge_equals_unmerged_model_float64():
    model = make()
    build_method(SSTConfig(rank=2), seed=1).prepare_model(model)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # move away from the SVD of the initialisation: non-orthonormal factors
        for layer in mergeable_layers(model).values():
            layer.S.mul_(1 + torch.rand(layer.S.shape, generator=g, dtype=torch.float64))
            layer.U_active.add_(0.3 * torch.randn(layer.U_active.shape, generator=g, dtype=torch.float64))
            layer.Vh_active.add_(0.3 * torch.randn(layer.Vh_active.shape, generator=g, dtype=torch.float64))
    assert isinstance(model.up, SpectralLinear) and isinstance(model.lm_head, nn.Linear)
    x = torch.randn(7, 6, dtype=torch.float64, generator=g)
    before = model(x)
    merge_model(model)
    assert type(model.up) is nn.Linear and type(model.down) is nn.Linear and model.down.bias is None
    assert not mergeable_layers(model)
    torch.testing.assert_close(model(x), before, rtol=1e-12, atol=1e-12)


def test_merged_state_dict_loads_into_the_plain_model():
    model = make(torch.float32)
    build_method(SSTConfig(rank=3), seed=0).prepare_model(model)
    merge_model(model)
    plain = Net()
    plain.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(4, 6)
    torch.testing.assert_close(plain(x), model(x))


def _randomise_lora(model, g):
    with torch.no_grad():
        for layer in mergeable_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g, dtype=torch.float64))


def test_lora_merge_equals_unmerged_model_float64():
    model = make()
    build_method(LoRAConfig(rank=2, alpha=4.0), seed=0).prepare_model(model)
    assert isinstance(model.up, LoRALinear)
    g = torch.Generator().manual_seed(5)
    _randomise_lora(model, g)
    x = torch.randn(7, 6, dtype=torch.float64, generator=g)
    before = model(x)
    assert not torch.allclose(before, make()(x))  # the LoRA term is really non-zero
    merge_model(model)
    assert type(model.up) is nn.Linear
    torch.testing.assert_close(model(x), before, rtol=1e-12, atol=1e-12)


def test_relora_merge_after_restarts_equals_unmerged_model_float64():
    model = make()
    method = build_method(ReLoRAConfig(rank=2, reset_every=1), seed=0)
    method.prepare_model(model)
    g = torch.Generator().manual_seed(6)
    for _ in range(2):  # two ReLoRA restarts fold updates into W0, then a live update on top
        _randomise_lora(model, g)
        for layer in mergeable_layers(model).values():
            layer.merge_()
            layer.reset_factors_(g)
    _randomise_lora(model, g)
    x = torch.randn(7, 6, dtype=torch.float64, generator=g)
    before = model(x)
    merge_model(model)
    torch.testing.assert_close(model(x), before, rtol=1e-12, atol=1e-12)


def test_lowrank_layers_merge_to_their_truncated_weight():
    layer = nn.Linear(10, 6).double()
    U, S, Vh, b = layer_factors(layer)
    low = LowRankLinear.from_factors(U, S, Vh, b, rank=2)
    model = nn.Sequential(low)
    x = torch.randn(3, 10, dtype=torch.float64)
    before = model(x)
    merge_model(model)
    assert type(model[0]) is nn.Linear
    assert torch.linalg.matrix_rank(model[0].weight).item() == 2
    torch.testing.assert_close(model(x), before, rtol=1e-12, atol=1e-12)
