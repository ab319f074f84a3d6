"""The spectral product's evaluation orders, bf16 frozen factors, compile, and failed SVDs."""

import pytest
import torch
from torch import nn

import sst
from sst.methods.sst import SSTMethod
from sst.spectral import SpectralLinear
from sst.spectral.functional import robust_svd
from sst.spectral.products import choose_orders, choose_product


def _layer(mode, enhanced=True, bias=True, **kw):
    torch.manual_seed(0)
    lin = nn.Linear(12, 9, bias=bias, dtype=torch.float64)
    return SpectralLinear.from_dense(lin, rank=3, svd_dtype=torch.float64, enhanced_gradient=enhanced,
                                     product=mode, generator=torch.Generator().manual_seed(0), **kw)


def _grads(layer, x, target):
    x = x.clone().requires_grad_(True)
    ((layer(x) - target) ** 2).sum().backward()
    params = [layer.U_active, layer.S, layer.Vh_active] + ([layer.bias] if layer.bias is not None else [])
    return x.grad, [p.grad for p in params]


@pytest.mark.parametrize("mode", ["dense", "thin"])
@pytest.mark.parametrize("enhanced", [False, True])
def test_both_orders_give_the_analytic_gradients(mode, enhanced):
    layer = _layer(mode, enhanced)
    x, target = torch.randn(2, 5, 12, dtype=torch.float64), torch.randn(2, 5, 9, dtype=torch.float64)
    dx, (dU, dS, dVh, db) = _grads(layer, x, target)
    U, S, Vh = layer.factors()
    W = (U * S) @ Vh
    G = 2 * ((x @ W.T + layer.bias) - target)  # dL/dy (2, 5, 9)
    dW = torch.einsum("bto,bti->oi", G, x)
    a = layer.active_idx
    c = S[a] / (S[a].abs() + layer.eps) if enhanced else S[a]
    torch.testing.assert_close(dS, torch.einsum("oi,oj,ji->i", U, dW, Vh.T)[layer.perm], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dU, (dW @ Vh[a].T) * c, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dVh, (U[:, a].T @ dW) * c[:, None], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dx, G @ W, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(db, G.sum((0, 1)), rtol=1e-10, atol=1e-12)


def test_auto_may_mix_orders_and_still_gives_the_dense_gradients():
    assert choose_orders("auto", 64, 40, 16, 3) == ("dense", "thin")
    torch.manual_seed(0)
    lin = nn.Linear(16, 40, dtype=torch.float64)
    layers = [SpectralLinear.from_dense(lin, rank=3, svd_dtype=torch.float64, product=mode,
                                        generator=torch.Generator().manual_seed(0)) for mode in ("auto", "dense")]
    x, target = torch.randn(64, 16, dtype=torch.float64), torch.randn(64, 40, dtype=torch.float64)
    (dx_auto, g_auto), (dx_dense, g_dense) = (_grads(layer, x, target) for layer in layers)
    torch.testing.assert_close(dx_auto, dx_dense, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_auto, g_dense):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_auto_picks_the_cheaper_order_by_shape():
    # llama-60m MLP up-projection at 8 x 256 tokens: compose W forward, never form it backward
    assert choose_orders("auto", 2048, 1376, 512, 64) == ("dense", "thin")
    assert choose_orders("auto", 2048, 512, 512, 64) == ("dense", "dense")
    assert choose_product("auto", 4, 1024, 1024) == "thin"  # few rows: x Vh^T is tiny
    assert choose_product("auto", 4096, 1024, 1024) == "dense"  # many rows: compose W once
    assert choose_product("dense", 1, 8, 8) == "dense" and choose_product("thin", 10**6, 8, 8) == "thin"


@pytest.mark.parametrize("mode", ["dense", "thin"])
def test_the_composed_weight_is_not_kept_for_backward(mode):
    """Only x, the factors (and in no mode an (out, in) matrix) are saved for backward."""
    layer = _layer(mode, bias=False)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        y = layer(torch.randn(7, 12, dtype=torch.float64))
    assert (9, 12) not in saved, saved
    assert (7, 12) in saved  # the input
    y.sum().backward()


def _bf16_pair():
    torch.manual_seed(0)
    lin = nn.Linear(48, 40)
    ref = SpectralLinear.from_dense(lin, rank=8, generator=torch.Generator().manual_seed(0))
    low = SpectralLinear.from_dense(lin, rank=8, generator=torch.Generator().manual_seed(0),
                                    frozen_dtype=torch.bfloat16)
    assert torch.equal(ref.active_idx, low.active_idx)
    return ref, low


def test_bf16_frozen_factors_keep_output_and_gradients_close():
    ref, low = _bf16_pair()
    assert low.U_frozen.dtype == torch.bfloat16 and low.Vh_frozen.dtype == torch.bfloat16
    assert low.S.dtype == low.U_active.dtype == torch.float32
    assert low.U_frozen.element_size() * 2 == ref.U_frozen.element_size()
    x, target = torch.randn(16, 48), torch.randn(16, 40)
    with torch.no_grad():
        y_ref, y_low = ref(x), low(x)
    assert y_low.dtype == torch.float32
    # bf16 keeps 8 significant bits: relative error of the output about 2^-8
    assert float((y_low - y_ref).norm() / y_ref.norm()) < 1e-2
    for layer in (ref, low):
        ((layer(x) - target) ** 2).sum().backward()
    for p_ref, p_low in ((ref.S, low.S), (ref.U_active, low.U_active), (ref.Vh_active, low.Vh_active)):
        assert p_low.grad.dtype == torch.float32
        assert float((p_low.grad - p_ref.grad).norm() / p_ref.grad.norm()) < 2e-2


def test_bf16_frozen_drift_stays_bounded_over_many_resamplings_and_resvds():
    """Each re-SVD re-rounds the frozen vectors to bf16; the error must not grow with the count."""
    ref, low = _bf16_pair()
    W = ref.dense_weight(torch.float64)
    gen = torch.Generator().manual_seed(1)
    errors = []
    for cycle in range(30):
        for _ in range(3):
            low.sample_("multinomial", gen)
        low.resvd_()
        errors.append(float((low.dense_weight(torch.float64) - W).norm() / W.norm()))
    assert errors[0] < 1e-2
    # a random walk of independent roundings would grow like sqrt(30) ~ 5.5x; stay well below 10x
    assert max(errors) < 10 * errors[0] + 1e-3 and max(errors) < 3e-2, errors


def test_spectral_layer_compiles_without_graph_breaks():
    torch.manual_seed(0)
    layer = SpectralLinear.from_dense(nn.Linear(16, 12), rank=4)
    x = torch.randn(6, 16)
    layer(x).pow(2).sum().backward()
    eager = [p.grad.clone() for p in (layer.U_active, layer.S, layer.Vh_active)]
    layer.zero_grad()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)  # fullgraph: a break raises
    out = compiled(x)
    torch.testing.assert_close(out, layer(x))
    out.pow(2).sum().backward()
    for g, p in zip(eager, (layer.U_active, layer.S, layer.Vh_active)):
        torch.testing.assert_close(p.grad, g)


def _failing_svd(monkeypatch, fail_dtypes):
    real = torch.linalg.svd
    calls = []

    def svd(A, *args, **kwargs):
        calls.append(A.dtype)
        if A.dtype in fail_dtypes:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return real(A, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", svd)
    return calls


def test_a_failed_float32_svd_is_retried_in_float64(monkeypatch):
    layer = SpectralLinear.from_dense(nn.Linear(12, 9), rank=3)
    x = torch.randn(4, 12)
    before = layer(x).detach()
    calls = _failing_svd(monkeypatch, {torch.float32})
    assert layer.resvd_() is not None
    assert calls == [torch.float32, torch.float64]
    assert layer.U_active.dtype == torch.float32
    torch.testing.assert_close(layer(x), before, rtol=1e-5, atol=1e-5)


def test_svd_failing_twice_keeps_the_factors_with_a_warning(monkeypatch, tiny_mlp):
    model, method = sst.convert(tiny_mlp, sst.SSTConfig(rank=3, resample_every=1, round_every=1), seed=0)
    opt = method.build_optimizer(model, lr=1e-3)
    x = torch.randn(4, 12, dtype=torch.float64)
    method.after_step(model, opt, 1)  # the first round of the unstaggered layer ends: a normal re-SVD
    layers = SSTMethod.layers(model)
    kept = [tuple(t.clone() for t in layer.factors()) for layer in layers]
    before = model(x).detach()
    _failing_svd(monkeypatch, {torch.float32, torch.float64})
    with pytest.warns(sst.errors.RunWarning, match=r"re-SVD of .* failed in float32 and float64 at step 2"):
        events = method.after_step(model, opt, 2)
    assert events["resvd"] == 0
    for layer, factors in zip(layers, kept):
        for now, then in zip(layer.factors(), factors):
            assert torch.isfinite(now).all()
            torch.testing.assert_close(now.sort(dim=-1).values if now.ndim == 1 else now.abs().sum(),
                                       then.sort(dim=-1).values if then.ndim == 1 else then.abs().sum())
    torch.testing.assert_close(model(x), before)  # re-sampling alone keeps the function


def test_robust_svd_refuses_non_finite_matrices():
    A = torch.randn(5, 4)
    A[1, 2] = float("nan")
    assert robust_svd(A) is None
    with pytest.raises(ValueError, match="holds NaN/inf"):
        lin = nn.Linear(4, 5)
        with torch.no_grad():
            lin.weight.copy_(A)
        SpectralLinear.from_dense(lin, rank=2)
