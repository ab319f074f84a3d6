"""SLTrain: W = (alpha / r) B A + S on a fixed random support; counts, exact merge, resume, errors."""

import copy

import pytest
import torch
from runconfigs import tiny_lm_config
from safetensors.torch import load_file
from torch import nn

import sst
from sst.config import build_config
from sst.inference.merge import merge_model
from sst.methods.sltrain_linear import SLTrainLinear, support_size
from sst.spectral import FactoredLinear
from sst.train.logging import read_metrics
from sst.train.loop import train


def _step(model, opt, x, y):
    ((model(x) - y) ** 2).mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _data():
    return torch.randn(8, 12, dtype=torch.float64), torch.randn(8, 6, dtype=torch.float64)


def test_trainable_count_follows_the_formula(tiny_mlp):
    model, _ = sst.convert(tiny_mlp, sst.SLTrainConfig(rank=3, density=0.1))
    counts = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    # per target: r (in + out) + floor(density in out) + out (bias); the head stays dense
    expected = (3 * (12 + 20) + 24 + 20) + (3 * (20 + 20) + 40 + 20) + (20 * 6 + 6)
    assert sum(counts.values()) == expected
    assert counts["up.values"] == 24 and counts["mid.values"] == 40
    assert support_size(10, 10, 0.29) == 29 and support_size(4, 4, 0.01) == 1
    assert model.up.support.dtype == torch.int64 and model.up.support.shape == (24,)
    assert torch.equal(model.up.support, model.up.support.unique())  # distinct and sorted


def test_initialisation_is_sparse_s_with_zero_b(tiny_mlp):
    model, _ = sst.convert(tiny_mlp, sst.SLTrainConfig(rank=3, density=0.1))
    layer = model.up
    assert float(layer.B.detach().abs().max()) == 0 and float(layer.A.detach().abs().max()) > 0
    W = layer.dense_weight()
    assert int((W != 0).sum()) == 24
    assert torch.equal(W.flatten()[layer.support], layer.values.detach())


@pytest.mark.parametrize("use_bias", [True, False])
def test_merge_to_dense_is_exact(use_bias):
    layer = SLTrainLinear.from_dense(nn.Linear(10, 7, bias=use_bias, dtype=torch.float64), rank=2,
                                     density=0.2, alpha=4.0)
    with torch.no_grad():
        layer.B.normal_()
    assert isinstance(layer, FactoredLinear)
    x = torch.randn(5, 3, 10, dtype=torch.float64)
    expected = x @ (2.0 * layer.B @ layer.A + layer.sparse_weight()).T
    if use_bias:
        expected = expected + layer.bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    dense = layer.to_dense()
    assert type(dense) is nn.Linear
    torch.testing.assert_close(dense(x), layer(x), rtol=1e-12, atol=1e-12)
    holder = nn.Sequential(layer)
    merge_model(holder)
    assert type(holder[0]) is nn.Linear


def test_forward_and_backward_under_bfloat16_autocast():
    layer = SLTrainLinear.from_dense(nn.Linear(8, 6), rank=2, density=0.3, alpha=2.0)
    x = torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    assert layer.values.grad.dtype == torch.float32 and float(layer.values.grad.abs().max()) > 0
    torch.testing.assert_close(y.float(), layer(x).detach(), rtol=0.05, atol=0.05)


def test_support_is_fixed_while_training_and_only_its_entries_move(tiny_mlp):
    model, method = sst.convert(tiny_mlp, sst.SLTrainConfig(rank=3, density=0.1))
    support = model.mid.support.clone()
    S0 = model.mid.sparse_weight().detach().clone()
    opt = method.build_optimizer(model, lr=1e-2, weight_decay=0.1)
    x, y = _data()
    for step in range(1, 4):
        _step(model, opt, x, y)
        assert method.after_step(model, opt, step) == {}
    assert torch.equal(model.mid.support, support)
    moved = model.mid.sparse_weight().detach() - S0
    assert int((moved != 0).sum()) == support.numel()  # every support entry trained, nothing else
    assert float(model.mid.B.detach().abs().max()) > 0
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert id(model.mid.values) in decayed  # matrix entries, though stored as a vector


def test_support_and_function_survive_save_and_load(tiny_mlp):
    fresh = copy.deepcopy(tiny_mlp)
    model, _ = sst.convert(tiny_mlp, sst.SLTrainConfig(rank=3, density=0.1), seed=1)
    other, _ = sst.convert(fresh, sst.SLTrainConfig(rank=3, density=0.1), seed=2)
    assert not torch.equal(model.up.support, other.up.support)  # another seed draws another support
    assert "up.support" in model.state_dict()
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.up.support, model.up.support)
    x, _ = _data()
    torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)


def test_a_resumed_run_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    method = {"name": "sltrain", "rank": 4, "density": 0.05}
    full = train(build_config(tiny_lm_config(tmp_path / "full", method, steps=4)))
    cfg = build_config(tiny_lm_config(tmp_path / "split", method, steps=4, save_every=2))
    import sst.train.loop as loop

    original = loop.save_checkpoint

    def stop_after_the_first_save(*args, **kwargs):
        out = original(*args, **kwargs)
        if str(args[0]).endswith("last"):
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(loop, "save_checkpoint", stop_after_the_first_save)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    saved = load_file(str(tmp_path / "split" / "last" / "model.safetensors"))
    resumed = train(cfg, resume=True)
    final = load_file(str(tmp_path / "split" / "last" / "model.safetensors"))
    reference = load_file(str(tmp_path / "full" / "last" / "model.safetensors"))
    supports = [k for k in final if k.endswith(".support")]
    assert supports and all(torch.equal(final[k], saved[k]) for k in supports)
    assert final.keys() == reference.keys() and all(torch.equal(final[k], reference[k]) for k in final)
    losses = lambda d: {r["step"]: r["loss"] for r in read_metrics(d, "train")}  # noqa: E731
    assert losses(tmp_path / "split") == losses(tmp_path / "full")
    assert resumed["val_loss"] == full["val_loss"]


def test_bad_settings_are_rejected_clearly(tiny_mlp):
    for density in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(sst.ConfigError, match=r"method.density: must be in \(0, 1\)"):
            sst.SLTrainConfig(density=density)
    with pytest.raises(sst.TargetError, match="rank 13 is larger than layer 'up'"):
        sst.convert(tiny_mlp, sst.SLTrainConfig(rank=13))
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\)"):
        SLTrainLinear(4, 4, rank=2, density=1.0, alpha=2.0)
    with pytest.raises(ValueError, match=r"rank must be an integer in \[1, 4\]"):
        SLTrainLinear(4, 6, rank=5, density=0.5, alpha=2.0)
