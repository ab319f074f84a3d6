"""LowRankLinear, rank selection by ratio and energy, and whole-model singular-value pruning."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sst.inference.lowrank import (
    LayerRank,
    LowRankLinear,
    choose_rank,
    layer_factors,
    lowrank_model,
    prunable_layers,
    prune_model,
    rank_for_energy,
    rank_for_ratio,
)
from sst.methods import LoRAConfig, SSTConfig, build_method
from sst.spectral.linear import SpectralLinear


class Net(nn.Module):
    def __init__(self, width: int = 12):
        super().__init__()
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)
        self.lm_head = nn.Linear(width, 5, bias=False)

    def forward(self, x):
        return self.lm_head(self.down(torch.relu(self.up(x))))


def test_full_rank_lowrank_layer_equals_dense_float64():
    torch.manual_seed(0)
    dense = nn.Linear(8, 6).double()
    U, S, Vh, b = layer_factors(dense)
    low = LowRankLinear.from_factors(U, S, Vh, b, rank=6)
    x = torch.randn(5, 3, 8, dtype=torch.float64)
    torch.testing.assert_close(low(x), dense(x), rtol=1e-12, atol=1e-12)
    assert sum(p.numel() for p in low.parameters()) == 6 * (8 + 6 + 1) + 6


def test_truncation_of_a_spectral_layer_is_the_best_rank_k_approximation():
    torch.manual_seed(1)
    layer = SpectralLinear.from_dense(nn.Linear(9, 7).double(), rank=3)
    with torch.no_grad():  # drift off orthonormality, as training does between re-SVDs
        layer.U_active.add_(0.2 * torch.randn_like(layer.U_active))
        layer.S.mul_(torch.rand_like(layer.S) + 0.5)
    W = layer.to_dense().weight
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    for k in (7, 3, 1):
        low = LowRankLinear.from_factors(*layer_factors(layer), rank=k)
        torch.testing.assert_close(low.dense_weight(), (U[:, :k] * S[:k]) @ Vh[:k], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(low.S, S[:k])


def test_lora_layer_factors_its_merged_weight():
    torch.manual_seed(2)
    model = Net().double()
    build_method(LoRAConfig(rank=2), seed=0).prepare_model(model)
    with torch.no_grad():
        model.up.lora_B.normal_()
    low = LowRankLinear.from_factors(*layer_factors(model.up), rank=12)
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(low(x), model.up(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("k, ratio, expected", [
    (10, 0.0, 10), (10, 0.1, 9), (10, 0.7, 3), (10, 0.9, 1), (10, 0.95, 1), (7, 0.5, 4), (64, 0.5, 32),
    (64, 0.3, 45),
])
def test_rank_for_ratio(k, ratio, expected):
    assert rank_for_ratio(k, ratio) == expected


@pytest.mark.parametrize("energy, expected", [
    (0.5, 1), (16 / 22, 1), (0.75, 2), (20 / 22, 2), (0.95, 3), (21.5 / 22, 4), (1.0, 4),
])
def test_rank_for_energy_on_a_hand_made_spectrum(energy, expected):
    S = torch.tensor([4.0, 2.0, 1.0, 1.0])  # S^2 = 16, 4, 1, 1 of 22
    assert rank_for_energy(S, energy) == expected


def test_rank_selection_rejects_bad_values():
    S = torch.ones(4)
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="ratio"):
            choose_rank(S, ratio=bad)
    for bad in (0.0, 1.01):
        with pytest.raises(ValueError, match="energy"):
            choose_rank(S, energy=bad)
    with pytest.raises(ValueError, match="exactly one"):
        choose_rank(S, ratio=0.5, energy=0.9)
    assert rank_for_energy(torch.zeros(3), 0.9) == 1


def test_prune_at_ratio_zero_changes_nothing():
    torch.manual_seed(3)
    model = Net().double()
    x = torch.randn(6, 12, dtype=torch.float64)
    before = model(x)
    ranks = prune_model(model, ratio=0.0)
    assert set(ranks) == {"up", "down"}  # lm_head is the excluded output layer
    assert all(r.rank == r.full_rank == 12 and abs(r.energy_kept - 1) < 1e-12 for r in ranks.values())
    assert type(model.up) is nn.Linear  # 12 (36 + 1) > 12 * 24: stored dense
    torch.testing.assert_close(model(x), before, rtol=1e-10, atol=1e-10)

    torch.manual_seed(3)
    model2 = Net().double()
    prune_model(model2, ratio=0.0, always_factor=True)
    assert isinstance(model2.up, LowRankLinear) and model2.up.rank == 12
    torch.testing.assert_close(model2(x), before, rtol=1e-10, atol=1e-10)


def test_prune_sst_model_keeps_function_at_ratio_zero_and_shrinks_at_high_ratio():
    torch.manual_seed(4)
    model = Net(width=32)
    build_method(SSTConfig(rank=4), seed=0).prepare_model(model)
    x = torch.randn(3, 32)
    before = model(x)
    zero = copy.deepcopy(model)
    prune_model(zero, ratio=0.0)
    torch.testing.assert_close(zero(x), before, rtol=1e-4, atol=1e-5)
    high = copy.deepcopy(model)
    ranks = prune_model(high, ratio=0.75)
    assert ranks["up"].rank == 8 and ranks["up"].factored and isinstance(high.up, LowRankLinear)
    n_dense = 32 * 64 * 2
    n_low = sum(p.numel() for m in (high.up, high.down) for p in m.parameters() if p.ndim > 0)
    assert n_low == 2 * (8 * (32 + 64 + 1)) + 64 + 32 < n_dense


def test_dense_model_prunes_only_the_method_targets():
    model = Net()
    assert set(prunable_layers(model, ["up"])) == {"up"}
    assert set(prunable_layers(model)) == {"up", "down"}
    assert set(prunable_layers(model, ["all-linear"], exclude_modules=["down", "lm_head"])) == {"up"}
    ranks = prune_model(model, energy=0.5, target_modules=["down"])
    assert set(ranks) == {"down"} and type(model.up) is nn.Linear
    with pytest.raises(ValueError, match="nothing to prune"):
        prune_model(Net(), ratio=0.5, target_modules=["nothing"])


def test_lowrank_model_rebuilds_the_saved_shapes():
    torch.manual_seed(5)
    model = Net(width=32)
    ranks = prune_model(model, ratio=0.8)
    fresh = lowrank_model(Net(width=32), {n: r.as_dict() for n, r in ranks.items()})
    assert isinstance(fresh.up, LowRankLinear) and fresh.up.rank == ranks["up"].rank
    fresh.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 32)
    torch.testing.assert_close(fresh(x), model(x))
    assert isinstance(ranks["up"], LayerRank)
