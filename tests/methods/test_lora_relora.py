import copy

import torch

import sst
from sst.methods.lora import LoRALinear


def _step(model, opt, x, y):
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def test_lora_trains_only_factors_and_non_targets(tiny_mlp):
    model, method = sst.convert(tiny_mlp, sst.LoRAConfig(rank=2, alpha=4.0))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"up.bias", "up.lora_A", "up.lora_B", "mid.bias", "mid.lora_A", "mid.lora_B",
                     "lm_head.weight", "lm_head.bias"}
    assert model.up.scaling == 2.0
    W0 = model.up.weight.clone()
    opt = method.build_optimizer(model, lr=1e-2)
    x, y = torch.randn(8, 12, dtype=torch.float64), torch.randn(8, 6, dtype=torch.float64)
    _step(model, opt, x, y)
    _step(model, opt, x, y)
    assert torch.equal(model.up.weight, W0)
    assert float(model.up.lora_B.detach().abs().max()) > 0


def test_relora_merge_keeps_function_and_resets_factor_moments(tiny_mlp):
    cfg = sst.ReLoRAConfig(rank=2, reset_every=3, restart_warmup_steps=2)
    model, method = sst.convert(tiny_mlp, cfg)
    opt = method.build_optimizer(model, lr=1e-2)
    x, y = torch.randn(8, 12, dtype=torch.float64), torch.randn(8, 6, dtype=torch.float64)
    for step in (1, 2, 3):
        _step(model, opt, x, y)
        if step < 3:
            assert method.after_step(model, opt, step) == {}
    W0 = model.up.weight.clone()
    head_state = {k: v.clone() for k, v in opt.state[model.lm_head.weight].items()}
    before = model(x).detach()
    assert method.after_step(model, opt, 3) == {"relora_merges": 2}
    torch.testing.assert_close(model(x), before, rtol=1e-10, atol=1e-10)
    assert not torch.equal(model.up.weight, W0)  # the update moved into W0
    assert float(model.up.lora_B.detach().abs().max()) == 0
    for layer in (model.up, model.mid):
        for p in (layer.lora_A, layer.lora_B):
            assert all(float(v.abs().max()) == 0 for v in opt.state[p].values())
    for k, v in opt.state[model.lm_head.weight].items():
        assert torch.equal(v, head_state[k])
    assert [method.lr_multiplier(s) for s in (2, 3, 4, 5)] == [1.0, 0.5, 1.0, 1.0]


def test_relora_warm_start_trains_w0_then_freezes_it(tiny_mlp):
    cfg = sst.ReLoRAConfig(rank=2, reset_every=100, warm_start_steps=2)
    model, method = sst.convert(tiny_mlp, cfg)
    opt = method.build_optimizer(model, lr=1e-2)
    x, y = torch.randn(8, 12, dtype=torch.float64), torch.randn(8, 6, dtype=torch.float64)
    W0 = model.up.weight.clone()
    _step(model, opt, x, y)
    method.after_step(model, opt, 1)
    assert not torch.equal(model.up.weight, W0)
    _step(model, opt, x, y)
    method.after_step(model, opt, 2)
    assert not model.up.weight.requires_grad and model.up.weight not in opt.state
    W_frozen = model.up.weight.clone()
    _step(model, opt, x, y)
    assert torch.equal(model.up.weight, W_frozen)


def test_lora_to_dense_matches(tiny_mlp):
    layer = LoRALinear.from_dense(copy.deepcopy(tiny_mlp.up), rank=2, alpha=2.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(layer.to_dense()(x), layer(x), rtol=1e-10, atol=1e-12)
