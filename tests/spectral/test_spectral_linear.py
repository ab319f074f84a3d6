import math

import pytest
import torch
from torch import nn

from sst.spectral import SpectralLinear
from sst.spectral.functional import compose, orthonormality_error


def dense(i=10, o=7, bias=True):
    return nn.Linear(i, o, bias=bias, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(10, 7), (7, 10), (8, 8)])
def test_full_rank_equals_dense_layer(shape):
    lin = dense(*shape)
    k = min(shape)
    layer = SpectralLinear.from_dense(lin, rank=k, svd_dtype=torch.float64)
    x = torch.randn(5, shape[0], dtype=torch.float64)
    torch.testing.assert_close(layer(x), lin(x), rtol=1e-12, atol=1e-12)


def test_round_trip_to_dense_is_exact_at_any_rank():
    lin = dense(16, 12)
    layer = SpectralLinear.from_dense(lin, rank=3, svd_dtype=torch.float64)
    back = layer.to_dense()
    torch.testing.assert_close(back.weight, lin.weight, rtol=0, atol=1e-12)
    torch.testing.assert_close(back.bias, lin.bias)
    assert type(back) is nn.Linear


def test_storage_shapes_and_trainable_set():
    layer = SpectralLinear.from_dense(dense(16, 12), rank=3)
    assert layer.U_active.shape == (12, 3) and layer.Vh_active.shape == (3, 16)
    assert layer.U_frozen.shape == (12, 9) and layer.Vh_frozen.shape == (9, 16)
    assert layer.S.shape == (12,)
    trainable = {n for n, p in layer.named_parameters() if p.requires_grad}
    assert trainable == {"U_active", "Vh_active", "S", "bias"}
    assert layer.trainable_count() == 3 * (12 + 16) + 12 + 12
    assert sum(p.numel() for p in layer.parameters()) == layer.trainable_count()


def _dense_grad(layer, x, target):
    """G = dL/dW for the dense weight the layer represents."""
    W = layer.to_dense().weight.detach().requires_grad_(True)
    loss = ((x @ W.T + layer.bias.detach() - target) ** 2).sum()
    (G,) = torch.autograd.grad(loss, W)
    return G


def test_gradients_match_analytic_formulas_default():
    lin = dense(9, 6)
    layer = SpectralLinear.from_dense(lin, rank=2, svd_dtype=torch.float64, enhanced_gradient=False)
    x, target = torch.randn(4, 9, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    ((layer(x) - target) ** 2).sum().backward()
    G = _dense_grad(layer, x, target)
    U, S, Vh = layer.factors()
    # dL/dS_i = U_i^T G Vh_i^T for every singular value (S is stored in slot order)
    expected = torch.einsum("oi,oj,ji->i", U, G, Vh.T)[layer.perm]
    torch.testing.assert_close(layer.S.grad, expected, rtol=1e-10, atol=1e-12)
    a = layer.active_idx
    # default vector gradients carry the factor S_i
    torch.testing.assert_close(layer.U_active.grad, (G @ Vh[a].T) * S[a], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.Vh_active.grad, (U[:, a].T @ G) * S[a, None], rtol=1e-10, atol=1e-12)


def test_enhanced_gradient_is_default_divided_by_singular_value():
    lin = dense(9, 6)
    torch.manual_seed(1)
    plain = SpectralLinear.from_dense(lin, rank=3, svd_dtype=torch.float64, enhanced_gradient=False)
    torch.manual_seed(1)
    enhanced = SpectralLinear.from_dense(lin, rank=3, svd_dtype=torch.float64, enhanced_gradient=True)
    assert torch.equal(plain.active_idx, enhanced.active_idx)
    x, target = torch.randn(4, 9, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    for layer in (plain, enhanced):
        ((layer(x) - target) ** 2).sum().backward()
    s = plain.factors()[1][plain.active_idx].abs() + enhanced.eps
    torch.testing.assert_close(enhanced.U_active.grad, plain.U_active.grad / s, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(enhanced.Vh_active.grad, plain.Vh_active.grad / s[:, None], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(enhanced.S.grad, plain.S.grad)
    # for S_i >> eps the enhanced gradients are G Vh_i^T and U_i^T G
    G = _dense_grad(plain, x, target)
    U, _, Vh = plain.factors()
    a = plain.active_idx
    torch.testing.assert_close(enhanced.U_active.grad, G @ Vh[a].T, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(enhanced.Vh_active.grad, U[:, a].T @ G, rtol=1e-6, atol=1e-12)


def test_enhanced_gradient_vanishes_for_a_zero_singular_value():
    layer = SpectralLinear.from_dense(dense(9, 6), rank=3, svd_dtype=torch.float64)
    with torch.no_grad():
        layer.S[0] = 0.0  # slot 0 is an active vector, as if its value had been clamped to 0
    x, target = torch.randn(4, 9, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    ((layer(x) - target) ** 2).sum().backward()
    assert torch.equal(layer.U_active.grad[:, 0], torch.zeros(6, dtype=torch.float64))
    assert torch.equal(layer.Vh_active.grad[0], torch.zeros(9, dtype=torch.float64))
    assert float(layer.U_active.grad[:, 1:].abs().min()) > 0 and float(layer.S.grad[0].abs()) > 0


def test_resample_keeps_function_and_parameter_identity():
    layer = SpectralLinear.from_dense(dense(16, 12), rank=4, svd_dtype=torch.float64)
    x = torch.randn(3, 16, dtype=torch.float64)
    before = layer(x).detach()
    ids = [id(p) for p in layer.parameters()]
    gen = torch.Generator().manual_seed(3)
    seen = set()
    for _ in range(5):
        layer.sample_("uniform", gen)
        seen.add(tuple(layer.active_idx.tolist()))
        torch.testing.assert_close(layer(x), before, rtol=1e-12, atol=1e-12)
    assert len(seen) > 1  # the active set really moved
    assert ids == [id(p) for p in layer.parameters()]
    assert all(p.requires_grad for p in layer.parameters())
    assert sorted(torch.cat([layer.active_idx, layer.frozen_idx]).tolist()) == list(range(12))


def test_set_active_moves_the_right_vectors():
    layer = SpectralLinear.from_dense(dense(10, 8), rank=2, svd_dtype=torch.float64)
    U, S, Vh = layer.factors()
    S_slots = layer.S.detach().clone()
    moved = layer.set_active_(torch.tensor([5, 1]))
    assert layer.active_idx.tolist() == [1, 5]
    torch.testing.assert_close(layer.U_active.detach(), U[:, [1, 5]])
    torch.testing.assert_close(layer.Vh_active.detach(), Vh[[1, 5]])
    torch.testing.assert_close(layer.S.detach()[:2], S[[1, 5]])  # slot order follows the vectors
    assert torch.equal(layer.S.detach(), S_slots[moved])  # the returned permutation maps old slots
    with pytest.raises(ValueError, match="distinct"):
        layer.set_active_(torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="lie in"):
        layer.set_active_(torch.tensor([1, 99]))


def test_resvd_restores_orthonormality_without_changing_function():
    layer = SpectralLinear.from_dense(dense(16, 12), rank=4, svd_dtype=torch.float64)
    with torch.no_grad():  # knock the active vectors off orthogonality, as training does
        layer.U_active.add_(0.3 * torch.randn_like(layer.U_active))
        layer.Vh_active.add_(0.3 * torch.randn_like(layer.Vh_active))
    U, _, Vh = layer.factors()
    assert orthonormality_error(U) > 1e-2
    x = torch.randn(3, 16, dtype=torch.float64)
    before = layer(x).detach()
    layer.resvd_(torch.float64)
    torch.testing.assert_close(layer(x), before, rtol=1e-10, atol=1e-10)
    U, S, Vh = layer.factors()
    assert orthonormality_error(U) < 1e-10
    assert orthonormality_error(Vh, columns=False) < 1e-10
    assert torch.all(S[:-1] >= S[1:]) and torch.all(S >= 0)
    assert int(layer.iteration) == 0


def test_project_clamps_and_normalises():
    layer = SpectralLinear.from_dense(dense(10, 8), rank=3)
    with torch.no_grad():
        layer.S[0] = -1.0
        layer.U_active.mul_(3.0)
        layer.Vh_active.mul_(0.5)
    layer.project_(normalize_vectors=True)
    assert float(layer.S.detach().min()) >= 0
    ones = torch.ones(3, dtype=torch.float64)
    torch.testing.assert_close(layer.U_active.detach().norm(dim=0), ones)
    torch.testing.assert_close(layer.Vh_active.detach().norm(dim=1), ones)


@pytest.mark.parametrize("rank", [0, -1, 9, 2.5])
def test_bad_rank_names_the_limit(rank):
    with pytest.raises(ValueError, match=r"min\(in, out\) = 8"):
        SpectralLinear.from_dense(dense(10, 8), rank=rank)


def test_svd_dtype_must_be_float32_or_64():
    with pytest.raises(ValueError, match="float32 or float64"):
        SpectralLinear.from_dense(dense(10, 8), rank=2, svd_dtype=torch.float16)


def test_meta_device_construction_allocates_nothing():
    with torch.device("meta"):
        lin = nn.Linear(4096, 2048)
    layer = SpectralLinear.from_dense(lin, rank=128)
    assert layer.S.is_meta and layer.U_frozen.is_meta
    assert layer.trainable_count() == 128 * (2048 + 4096) + 2048 + 2048


def test_compose_matches_matrix_product():
    U, S, Vh = torch.randn(5, 3), torch.rand(3), torch.randn(3, 4)
    torch.testing.assert_close(compose(U, S, Vh), U @ torch.diag(S) @ Vh)


def test_bf16_autocast_backward_runs_and_keeps_float32_gradients():
    layer = SpectralLinear.from_dense(nn.Linear(16, 12), rank=4)
    x = torch.randn(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().pow(2).sum().backward()
    for p in (layer.U_active, layer.Vh_active, layer.S):
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
    reference = SpectralLinear.from_dense(layer.to_dense(), rank=4)
    reference.set_active_(layer.active_idx)
    reference(x).pow(2).sum().backward()
    torch.testing.assert_close(layer.S.grad, reference.S.grad, rtol=0.1, atol=0.05)


@pytest.mark.parametrize("shape,rank", [((16, 12), 3), ((16, 12), 5)])
def test_sequential_round_visits_every_vector_while_S_changes(shape, rank):
    layer = SpectralLinear.from_dense(dense(*shape), rank=rank, sampling="sequential")
    visits = torch.zeros(layer.k, dtype=torch.long)
    visits[layer.active_idx] += 1
    gen = torch.Generator().manual_seed(0)
    for _ in range(math.ceil(layer.k / rank) - 1):
        with torch.no_grad():  # training reshuffles the spectrum between iterations
            layer.S.copy_(torch.rand(layer.k, generator=gen, dtype=layer.S.dtype))
        layer.sample_("sequential")
        visits[layer.active_idx] += 1
    assert int(visits.min()) >= 1
    if layer.k % rank == 0:
        assert torch.equal(visits, torch.ones_like(visits))  # exactly once per round


def test_sequential_order_survives_a_state_dict_round_trip():
    layer = SpectralLinear.from_dense(dense(16, 12), rank=3, sampling="sequential")
    with torch.no_grad():
        layer.S.copy_(torch.rand(12, dtype=layer.S.dtype))
    twin = SpectralLinear.from_dense(dense(16, 12), rank=3, sampling="sequential")
    twin.load_state_dict(layer.state_dict())
    for _ in range(3):
        layer.sample_("sequential")
        twin.sample_("sequential")
        assert torch.equal(layer.active_idx, twin.active_idx)


def test_resvd_reports_how_a_reordered_spectrum_moved():
    layer = SpectralLinear.from_dense(dense(16, 12), rank=3, svd_dtype=torch.float64)
    moved = layer.resvd_(torch.float64)  # already an SVD: every component stays in its slot
    assert torch.equal(moved, torch.arange(12))
    U, S, Vh = layer.factors()
    layer.load_factors_(U, S.flip(0), Vh)  # training reversed the spectrum
    layer.set_active_(torch.tensor([0, 4, 9]))
    x = torch.randn(3, 16, dtype=torch.float64)
    before, S_slots = layer(x).detach(), layer.S.detach().clone()
    moved = layer.resvd_(torch.float64)
    torch.testing.assert_close(layer(x), before, rtol=1e-10, atol=1e-10)
    assert sorted(moved.tolist()) == list(range(12))
    torch.testing.assert_close(S_slots[moved], layer.S.detach(), rtol=1e-10, atol=1e-12)
    assert not torch.equal(moved, torch.arange(12))


def test_match_components_is_a_permutation_when_overlaps_collide():
    from sst.spectral.functional import match_components

    eye = torch.eye(4, dtype=torch.float64)
    U_new = eye.clone()
    U_new[:, 1] = 0.8 * eye[:, 0] + 0.6 * eye[:, 1]  # new component 1 looks most like old 0 ...
    U_new[:, 3] = 0.6 * eye[:, 2] + 0.8 * eye[:, 3]
    assert match_components(eye, eye, U_new, U_new.T).tolist() == [0, 1, 2, 3]  # ... which 0 took
    assert match_components(eye, eye, U_new[:, [3, 2, 1, 0]], U_new.T[[3, 2, 1, 0]]).tolist() == [3, 2, 0, 1]
