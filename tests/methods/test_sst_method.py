import copy
import math

import pytest
import torch
from torch import nn

import sst
from sst.methods.sst import SSTMethod
from sst.spectral.functional import svd_factors


def _train_steps(model, method, optimizer, x, y, first, last):
    for step in range(first, last + 1):
        for group in optimizer.param_groups:
            group["lr"] = 1e-2 * method.lr_multiplier(step - 1)
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        method.after_step(model, optimizer, step)


def _setup(tiny_mlp, **kw):
    cfg = sst.SSTConfig(rank=3, resample_every=4, **kw)
    model, method = sst.convert(tiny_mlp, cfg, seed=1)
    opt = method.build_optimizer(model, lr=1e-2)
    x, y = torch.randn(16, 12, dtype=torch.float64), torch.randn(16, 6, dtype=torch.float64)
    return model, method, opt, x, y


def test_only_intended_tensors_change_after_a_step(tiny_mlp):
    model, method, opt, x, y = _setup(tiny_mlp)
    layers = SSTMethod.layers(model)
    frozen = [(layer.U_frozen.clone(), layer.Vh_frozen.clone()) for layer in layers]
    S = [layer.S.detach().clone() for layer in layers]
    _train_steps(model, method, opt, x, y, 1, 1)
    for layer, (U_f, Vh_f), S0 in zip(layers, frozen, S):
        assert torch.equal(layer.U_frozen, U_f) and torch.equal(layer.Vh_frozen, Vh_f)  # bit-identical
        assert torch.all(layer.S.detach() != S0)  # every singular value trained
        assert float(layer.S.detach().min()) >= 0
        ones = torch.ones(layer.rank, dtype=torch.float64)
        torch.testing.assert_close(layer.U_active.detach().norm(dim=0), ones)
        torch.testing.assert_close(layer.Vh_active.detach().norm(dim=1), ones)


def test_resample_resets_exactly_the_active_moments(tiny_mlp):
    model, method, opt, x, y = _setup(tiny_mlp)
    _train_steps(model, method, opt, x, y, 1, 3)
    loss = ((model(x) - y) ** 2).mean()  # the 4th step, up to the iteration boundary
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    others = [p for p in model.parameters() if p.requires_grad and not any(
        p is q for layer in SSTMethod.layers(model) for q in (layer.U_active, layer.Vh_active, layer.S))]
    saved = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in others}
    x_check = torch.randn(3, 12, dtype=torch.float64)
    before = model(x_check).detach()
    events = method.after_step(model, opt, 4)  # boundary: project, resample (+ maybe re-SVD)
    assert events["resampled"] == 2
    # renormalisation changes the function slightly; re-sampling itself must not
    for layer in SSTMethod.layers(model):
        assert float(layer.S.detach().min()) >= 0
    torch.testing.assert_close(model(x_check), before, rtol=0.2, atol=0.05)
    after_project = model(x_check).detach()
    method.layers(model)[0].sample_("uniform", torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(x_check), after_project, rtol=1e-10, atol=1e-10)
    for layer in SSTMethod.layers(model):
        for p in (layer.U_active, layer.Vh_active, layer.S):
            assert all(float(v.abs().max()) == 0 for v in opt.state[p].values())
    for p in others:
        for k, v in opt.state[p].items():
            assert torch.equal(v, saved[id(p)][k])
        assert float(opt.state[p]["exp_avg"].abs().max()) > 0


def test_singular_value_state_kept_when_asked(tiny_mlp):
    model, method, opt, x, y = _setup(tiny_mlp, reset_singular_value_state=False)
    _train_steps(model, method, opt, x, y, 1, 4)
    for layer in SSTMethod.layers(model):
        assert float(opt.state[layer.S]["exp_avg_sq"].abs().max()) > 0
        assert float(opt.state[layer.U_active]["exp_avg_sq"].abs().max()) == 0


@pytest.mark.parametrize("stagger, expected", [
    (False, [(4, 1), (7, 1), (8, 1)]),  # the paper's schedule: every layer's round starts at 0
    (True, [(4, 1), (6, 1), (8, 1)]),  # layer 1's first round is 1 iteration shorter, then every 7
])
def test_rounds_resvd_each_layer_after_ceil_k_over_r_iterations(tiny_mlp, stagger, expected):
    model, method, opt, x, y = _setup(tiny_mlp, stagger_resvd=stagger)
    layers = SSTMethod.layers(model)  # k = 12 and 20 with r = 3 -> rounds of 4 and 7 iterations
    resvd_at = []
    for step in range(1, 4 * 8 + 1):
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        events = method.after_step(model, opt, step)
        if events.get("resvd"):
            resvd_at.append((step // 4, events["resvd"]))
    assert [math.ceil(layer.k / layer.rank) for layer in layers] == [4, 7]
    assert resvd_at == expected


def test_lr_rewarms_after_each_boundary(tiny_mlp):
    method = sst.build_method(sst.SSTConfig(rank=2, resample_every=10, restart_warmup_steps=5))
    assert [method.lr_multiplier(s) for s in (0, 5, 9)] == [1.0, 1.0, 1.0]  # first iteration: global warm-up
    assert [method.lr_multiplier(s) for s in (10, 11, 14, 15, 19)] == [0.2, 0.4, 1.0, 1.0, 1.0]


def test_state_dict_round_trip_mid_iteration_continues_exactly(tiny_mlp):
    import copy

    model, method, opt, x, y = _setup(tiny_mlp)
    _train_steps(model, method, opt, x, y, 1, 6)  # mid-way through the 2nd iteration
    twin_model = copy.deepcopy(model)
    twin_method = sst.build_method(method.config, seed=999)  # different seed: state must override it
    twin_method.load_state_dict(method.state_dict())
    twin_opt = twin_method.build_optimizer(twin_model, lr=1e-2)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # no shared moment tensors
    _train_steps(model, method, opt, x, y, 7, 13)
    _train_steps(twin_model, twin_method, twin_opt, x, y, 7, 13)
    for a, b in zip(model.state_dict().values(), twin_model.state_dict().values()):
        assert torch.equal(a, b)
    saved = torch.load(_roundtrip_file(method.state_dict()), weights_only=True)
    assert set(saved) == {"generator", "svd_seconds", "resample_seconds"}


def _roundtrip_file(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_trainable_counts_match_the_spec(tiny_mlp):
    model, _ = sst.convert(tiny_mlp, sst.SSTConfig(rank=3))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    per_layer = lambda m, n: 3 * (m + n) + min(m, n) + m  # r(m+n) + k + bias  # noqa: E731
    head = 6 * 20 + 6
    assert trainable == per_layer(20, 12) + per_layer(20, 20) + head


def test_llama_1b3_trainable_ratio_is_18_7_percent_on_meta():
    """The spec's check: LLaMA-1.3B (d 2048, ffn 5461, 24 layers, vocab 32000, untied) at r = 128."""

    class Block(nn.Module):
        def __init__(self, d, f):
            super().__init__()
            self.q_proj, self.k_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
            self.v_proj, self.o_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
            self.gate_proj, self.up_proj = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False)
            self.down_proj = nn.Linear(f, d, bias=False)
            self.norm1, self.norm2 = nn.Parameter(torch.ones(d)), nn.Parameter(torch.ones(d))

    class Llama(nn.Module):
        def __init__(self, v=32000, d=2048, f=5461, n=24):
            super().__init__()
            self.embed_tokens = nn.Embedding(v, d)
            self.layers = nn.ModuleList(Block(d, f) for _ in range(n))
            self.norm = nn.Parameter(torch.ones(d))
            self.lm_head = nn.Linear(d, v, bias=False)

    with torch.device("meta"):
        model = Llama()
    total = sum(p.numel() for p in model.parameters())
    model, _ = sst.convert(model, sst.SSTConfig(rank=128))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 1.3e9 < total < 1.4e9
    assert round(100 * trainable / total, 1) == 18.7


def test_kept_singular_value_moments_follow_their_values_through_resampling(tiny_mlp):
    model, method, opt, x, y = _setup(tiny_mlp, reset_singular_value_state=False)
    _train_steps(model, method, opt, x, y, 1, 3)
    layer = SSTMethod.layers(model)[0]
    canonical = lambda t: torch.empty_like(t).index_copy_(0, layer.perm, t)  # noqa: E731
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    before = canonical(opt.state[layer.S]["exp_avg"].clone())
    method.after_step(model, opt, 4)  # re-samples: slots move, moments must move with them
    assert int(layer.iteration) == 2  # a plain re-sampling, not a re-SVD
    torch.testing.assert_close(canonical(opt.state[layer.S]["exp_avg"]), before)


def test_kept_singular_value_moments_follow_their_values_through_a_resvd(tiny_mlp):
    model, method, opt, x, y = _setup(tiny_mlp, reset_singular_value_state=False)
    _train_steps(model, method, opt, x, y, 1, 15)
    layer = SSTMethod.layers(model)[0]  # k = 12, r = 3: its first re-SVD comes at step 16
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    # Orthonormal factors with a reversed spectrum: the re-SVD re-orders it and changes no value.
    U, S, Vh = svd_factors(layer.weight().detach(), torch.float64)
    layer.load_factors_(U, S.flip(0), Vh)
    opt.state[layer.S]["exp_avg"].copy_(layer.S.detach())  # tag each moment with its value
    events = method.after_step(model, opt, 16)
    assert events["resvd"] == 1 and int(layer.iteration) == 1
    torch.testing.assert_close(opt.state[layer.S]["exp_avg"], layer.S.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reset", [True, False])
def test_active_only_singular_values_leave_the_frozen_slots_unchanged(tiny_mlp, reset):
    # decay on S and (with reset off) stale moments would move frozen slots without a gradient
    model, method, opt, x, y = _setup(tiny_mlp, singular_values="active", reset_singular_value_state=reset)
    for group in opt.param_groups:
        group["weight_decay"] = 0.1
    layers = SSTMethod.layers(model)
    for first in (1, 5):  # two iterations: the frozen set changes at the step-4 re-sample
        canonical = [layer.factors()[1] for layer in layers]
        frozen_idx = [layer.frozen_idx.clone() for layer in layers]
        active_idx = [layer.active_idx.clone() for layer in layers]
        _train_steps(model, method, opt, x, y, first, first + 2)  # within the iteration
        for layer, S0, fi, ai in zip(layers, canonical, frozen_idx, active_idx):
            S1 = layer.factors()[1]
            assert torch.equal(S1[fi], S0[fi])
            assert torch.all(S1[ai] != S0[ai])
        _train_steps(model, method, opt, x, y, first + 3, first + 3)


def test_active_only_singular_values_get_no_gradient_in_the_frozen_slots(tiny_mlp):
    model, *_ , x, y = _setup(tiny_mlp, singular_values="active")
    ((model(x) - y) ** 2).mean().backward()
    for layer in SSTMethod.layers(model):
        assert torch.count_nonzero(layer.S.grad[layer.rank:]) == 0
        assert torch.count_nonzero(layer.S.grad[: layer.rank]) == layer.rank


def test_orthogonal_init_gives_a_flat_spectrum_of_the_dense_norm(tiny_mlp):
    dense_norms = [tiny_mlp.up.weight.detach().norm(), tiny_mlp.mid.weight.detach().norm()]  # not the head
    fresh = copy.deepcopy(tiny_mlp)
    model, method = sst.convert(tiny_mlp, sst.SSTConfig(rank=3, init="orthogonal"), seed=1)
    layers = SSTMethod.layers(model)
    assert len(layers) == len(dense_norms)
    for layer, norm in zip(layers, dense_norms):
        U, S, Vh = layer.factors()
        torch.testing.assert_close(S, torch.full_like(S, float(S[0])))
        torch.testing.assert_close(layer.dense_weight().norm(), norm.to(S.dtype))
        eye = torch.eye(layer.k, dtype=U.dtype)
        torch.testing.assert_close(U.T @ U, eye)
        torch.testing.assert_close(Vh @ Vh.T, eye)
    other, _ = sst.convert(fresh, sst.SSTConfig(rank=3, init="orthogonal"), seed=2)
    assert not torch.allclose(SSTMethod.layers(other)[0].factors()[0], layers[0].factors()[0])
