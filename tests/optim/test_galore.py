import pytest
import torch

import sst
from sst.optim.galore import GaLoreAdamW, galore_projector, project, project_back


@pytest.mark.parametrize("shape", [(8, 5), (5, 8)])
def test_full_rank_projection_with_sgd_equals_sgd(shape):
    W = torch.randn(*shape, dtype=torch.float64)
    G = torch.randn(*shape, dtype=torch.float64)
    P = galore_projector(G, rank=min(shape)).double()
    lr = 0.1
    galore_sgd = W - lr * project_back(project(G, P), P, W.shape)
    torch.testing.assert_close(galore_sgd, W - lr * G, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,low", [((12, 6), (12, 2)), ((6, 12), (2, 12))])
def test_moments_have_the_projected_shape(shape, low):
    w = torch.nn.Parameter(torch.randn(*shape))
    b = torch.nn.Parameter(torch.randn(shape[0]))
    opt = GaLoreAdamW([{"params": [w], "rank": 2, "proj_update_every": 3, "scale": 0.25},
                       {"params": [b]}], lr=1e-2)
    for _ in range(4):
        (w.sum() ** 2 + (w ** 3).sum() + b.sum()).backward()
        opt.step()
        opt.zero_grad()
    assert opt.state[w]["exp_avg"].shape == low and opt.state[w]["exp_avg_sq"].shape == low
    assert opt.state[b]["exp_avg"].shape == b.shape
    assert float(opt.state[w]["step"]) == 4


def test_projected_update_lies_in_the_projection_subspace():
    w = torch.nn.Parameter(torch.randn(10, 4, dtype=torch.float64))
    opt = GaLoreAdamW([{"params": [w], "rank": 1, "proj_update_every": 100, "scale": 1.0}], lr=0.1)
    before = w.detach().clone()
    (w @ torch.randn(4, 3, dtype=torch.float64)).square().sum().backward()
    opt.step()
    delta = w.detach() - before
    S = torch.linalg.svdvals(delta)
    assert float(S[1] / S[0]) < 1e-5  # rank one up to the float32 projector's rounding


def test_galore_method_projects_only_targets(tiny_mlp):
    model, method = sst.convert(tiny_mlp, sst.GaLoreConfig(rank=3, proj_update_every=2))
    opt = method.build_optimizer(model, lr=1e-3)
    x, y = torch.randn(8, 12, dtype=torch.float64), torch.randn(8, 6, dtype=torch.float64)
    ((model(x) - y) ** 2).mean().backward()
    opt.step()
    assert opt.state[model.up.weight]["exp_avg"].shape == (20, 3)
    assert opt.state[model.mid.weight]["exp_avg"].shape == (20, 3)
    assert opt.state[model.lm_head.weight]["exp_avg"].shape == (6, 20)
    loaded = torch.load(_save(opt.state_dict()), weights_only=True)
    assert sum("projector" in st for st in loaded["state"].values()) == 2


def _save(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer
